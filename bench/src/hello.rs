//! The program every measurement runs: a hello world per language.
use onpyrunner_languages::Language;

/// What every hello world prints.
pub const HELLO_OUTPUT: &str = "hello, world\n";

/// The hello world of a language, printing [`HELLO_OUTPUT`].
pub fn hello_world(lang: &Language) -> &'static str {
    match lang.id.as_str() {
        "node" => "console.log(\"hello, world\");\n",
        "java" => {
            "public class Main {\n    public static void main(String[] args) {\n        \
             System.out.println(\"hello, world\");\n    }\n}\n"
        }
        "c" => {
            "#include <stdio.h>\nint main(void) {\n    puts(\"hello, world\");\n    return 0;\n}\n"
        }
        "cpp" => "#include <iostream>\nint main() {\n    std::cout << \"hello, world\\n\";\n}\n",
        "rust" => "fn main() {\n    println!(\"hello, world\");\n}\n",
        "go" => {
            "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hello, world\")\n}\n"
        }
        // CPython, PyPy, and any Python added later.
        _ => "print(\"hello, world\")\n",
    }
}

"""Judge0's official Python SDK (judge0 0.0.8 from PyPI), unmodified, against our Judge0 CE
routes. scripts/clients.sh starts the server and sets ONPYRUNNER_URL. The SDK reads /about,
/config_info and /languages when it is made, posts base64 bodies, and polls with fields=*;
several test cases go through the batch routes.
"""

import os
import unittest

import judge0
from judge0 import Status

URL = os.environ.get("ONPYRUNNER_URL")

# A hello world that reads a word of stdin, in each language CE 1.13.1 has and we have, by the
# SDK's own names (it maps them to CE's ids through /about's version).
HELLO = {
    judge0.PYTHON: "print('hello', input())",
    judge0.JAVASCRIPT: "const l = require('fs').readFileSync(0, 'utf8').split('\\n')[0];"
    " console.log('hello', l);",
    judge0.JAVA: "import java.util.*; public class Main { public static void main(String[] a)"
    ' { System.out.println("hello " + new Scanner(System.in).nextLine()); } }',
    judge0.C: '#include <stdio.h>\nint main(void) { char b[64]; scanf("%63s", b);'
    ' printf("hello %s\\n", b); return 0; }',
    judge0.CPP: "#include <bits/stdc++.h>\nint main() { std::string s; std::cin >> s;"
    ' std::cout << "hello " << s << std::endl; }',
    judge0.RUST: "fn main() { let mut s = String::new();"
    ' std::io::stdin().read_line(&mut s).unwrap(); println!("hello {}", s.trim()); }',
    judge0.GO: 'package main\nimport "fmt"\nfunc main() { var s string; fmt.Scan(&s);'
    ' fmt.Println("hello", s) }',
}


class Judge0Sdk(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        assert URL, "ONPYRUNNER_URL is set (run through scripts/clients.sh)"
        cls.client = judge0.Client(URL)

    def run_code(self, source, language=judge0.PYTHON, **kwargs):
        return judge0.run(client=self.client, source_code=source, language=language, **kwargs)

    def test_the_client_reads_about_config_and_languages(self):
        self.assertEqual(self.client.version, "1.13.1")
        self.assertGreaterEqual(self.client.config.max_submission_batch_size, 2)
        for language in HELLO:
            self.assertTrue(self.client.is_language_supported(language), language)

    def test_every_language_hello_with_stdin(self):
        for language, source in HELLO.items():
            with self.subTest(language=language.name):
                result = self.run_code(source, language=language, stdin="you")
                self.assertEqual(result.status, Status.ACCEPTED, result)
                self.assertEqual(result.stdout, "hello you\n", result)
                self.assertIsNotNone(result.time)
                self.assertIsNotNone(result.memory)

    def test_pypy_under_its_own_id(self):
        pypy = [lang for lang in self.client.languages if "PyPy" in lang.name]
        self.assertEqual(len(pypy), 1, self.client.languages)
        result = self.run_code("import sys; print(sys.implementation.name)", language=pypy[0].id)
        self.assertEqual(result.stdout, "pypy\n", result)

    def test_a_compile_error_is_status_6_with_the_compilers_words(self):
        result = self.run_code("int main( {", language=judge0.C)
        self.assertEqual(result.status, Status.COMPILATION_ERROR, result)
        self.assertIn("error", result.compile_output)
        self.assertIsNone(result.stdout)

    def test_past_the_time_limit_is_status_5(self):
        result = self.run_code("while True: pass", cpu_time_limit=1, wall_time_limit=2)
        self.assertEqual(result.status, Status.TIME_LIMIT_EXCEEDED, result)

    def test_a_non_zero_exit_is_nzec_and_a_segfault_sigsegv(self):
        result = self.run_code("import sys; sys.exit(3)")
        self.assertEqual(result.status, Status.RUNTIME_ERROR_NZEC, result)
        self.assertEqual(result.exit_code, 3)
        result = self.run_code(
            "int main(void) { volatile int *p = 0; return *p; }", language=judge0.C
        )
        self.assertEqual(result.status, Status.RUNTIME_ERROR_SIGSEGV, result)

    def test_expected_output_gives_accepted_or_wrong_answer(self):
        source = "a, b = map(int, input().split()); print(a + b)"
        result = self.run_code(source, stdin="1 2", expected_output="3")
        self.assertEqual(result.status, Status.ACCEPTED, result)
        result = self.run_code(source, stdin="1 2", expected_output="4")
        self.assertEqual(result.status, Status.WRONG_ANSWER, result)

    def test_test_cases_go_as_a_batch_each_with_its_verdict(self):
        source = "a, b = map(int, input().split()); print(a + b)"
        results = self.run_code(
            source,
            test_cases=[("1 2", "3"), ("2 2", "5"), ("10 20", "30")],
        )
        self.assertEqual(
            [r.status for r in results],
            [Status.ACCEPTED, Status.WRONG_ANSWER, Status.ACCEPTED],
            results,
        )
        self.assertEqual([r.stdout for r in results], ["3\n", "4\n", "30\n"])
        self.assertEqual(len({str(r.token) for r in results}), 3)


if __name__ == "__main__":
    unittest.main()

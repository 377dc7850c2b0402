// Piston's most-downloaded Node client, piston-client 1.0.2 from npm, unmodified, against our
// Piston v2 routes (scripts/clients.sh starts the server and sets ONPYRUNNER_URL). It posts
// with node-fetch's default content type (text/plain) and Piston's public-host defaults
// (run_timeout 3000, memory limits -1, args ["1", "2", "3"]).
import { test } from "node:test";
import assert from "node:assert/strict";
import piston from "piston-client";

const server = process.env.ONPYRUNNER_URL;
assert.ok(server, "ONPYRUNNER_URL is set (run through scripts/clients.sh)");
const client = piston({ server });

// A hello world that reads a line of stdin, in each of our languages, under Piston's names.
const hello = {
  python: "print('hello', input())",
  pypy: "print('hello', input())",
  javascript: "const l = require('fs').readFileSync(0, 'utf8').split('\\n')[0]; console.log('hello', l);",
  java: "import java.util.*; public class Main { public static void main(String[] a) { System.out.println(\"hello \" + new Scanner(System.in).nextLine()); } }",
  c: "#include <stdio.h>\nint main(void) { char b[64]; scanf(\"%63s\", b); printf(\"hello %s\\n\", b); return 0; }",
  "c++": "#include <bits/stdc++.h>\nint main() { std::string s; std::cin >> s; std::cout << \"hello \" << s << std::endl; }",
  rust: "fn main() { let mut s = String::new(); std::io::stdin().read_line(&mut s).unwrap(); println!(\"hello {}\", s.trim()); }",
  go: "package main\nimport \"fmt\"\nfunc main() { var s string; fmt.Scan(&s); fmt.Println(\"hello\", s) }",
};

test("runtimes lists every language under Piston's names, with semver versions", async () => {
  const runtimes = await client.runtimes();
  assert.ok(Array.isArray(runtimes), JSON.stringify(runtimes));
  for (const language of Object.keys(hello)) {
    const rt = runtimes.find((r) => r.language === language);
    assert.ok(rt, `${language} is listed`);
    assert.match(rt.version, /^\d+\.\d+\.\d+$/);
  }
});

for (const [language, code] of Object.entries(hello)) {
  test(`${language}: hello with stdin`, async () => {
    const result = await client.execute(language, code, { stdin: "you" });
    assert.equal(result.language, language, JSON.stringify(result));
    assert.equal(result.run.stdout, "hello you\n", JSON.stringify(result));
    assert.equal(result.run.code, 0);
    assert.equal(result.run.signal, null);
  });
}

test("the arguments follow the program: the client's default ['1', '2', '3']", async () => {
  const result = await client.execute("python", "import sys; print(sys.argv[1:])");
  assert.equal(result.run.stdout, "['1', '2', '3']\n", JSON.stringify(result));
});

test("c: a compile error is the compile stage's, and the run is a copy of it", async () => {
  const result = await client.execute("c", "int main( {");
  assert.ok(result.compile, JSON.stringify(result));
  assert.notEqual(result.compile.code, 0);
  assert.match(result.compile.stderr, /error/);
  assert.deepEqual(result.run, result.compile);
});

test("python: past run_timeout the run is killed, status TO", async () => {
  const result = await client.execute("python", "while True: pass", { runTimeout: 1000 });
  assert.equal(result.run.status, "TO", JSON.stringify(result));
  assert.equal(result.run.signal, "SIGKILL");
  assert.equal(result.run.code, null);
});

test("python: a non-zero exit is RE with its code", async () => {
  const result = await client.execute("python", "import sys; print('x', file=sys.stderr); sys.exit(3)");
  assert.equal(result.run.status, "RE", JSON.stringify(result));
  assert.equal(result.run.code, 3);
  assert.equal(result.run.stderr, "x\n");
});

test("an unknown language is Piston's refusal, which the client returns as it is", async () => {
  const result = await client.execute("cobol", "x", { version: "1.0.0" });
  assert.equal(result.message, "cobol-1.0.0 runtime is unknown", JSON.stringify(result));
});

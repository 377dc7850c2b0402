const readline = require("node:readline");
const rl = readline.createInterface({ input: process.stdin });
process.stdout.write("What is your name? ");
rl.once("line", (name) => {
  console.log(`\nHello, ${name}! This is Node.js ${process.version}.`);
  rl.close();
});

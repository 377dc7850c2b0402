// The judge server inside the Java image's warm JVM (OnpyrunnerWarm, after it compiled): runs
// each test of a judged run in this JVM instead of a fresh `java` per test.
//
// Per test ("test" message: the input file and the table's run argv) the program gets what a
// fresh `java -cp . Main` would give it, as far as one JVM can:
// - its classes from a new class loader over the work directory, so statics start afresh;
// - Main.main(args) in a thread named "main" with the run command's 512 MiB stack;
// - System.in over the test's input file, System.out/err new autoflushing PrintStreams over
//   fd 1/2 (as the JDK makes them), flushed at the end and shut after it, so nothing a
//   left-over thread prints reaches the next test;
// - the exit code `java` would give: System.exit/Runtime.exit/Runtime.halt in the program's
//   classes are rewritten (java.lang.classfile) into calls to Exit, which records the first
//   code and throws an Error of ours; an uncaught exception in main prints its stack trace and
//   gives 1; otherwise 0 once main and the program's non-daemon threads are done;
// - shutdown hooks the program added run at its end, or in its exit call.
// The reply is ["tested", code], or ["tested", code, "last"] when threads of the test are still
// running (a loop that swallowed the exit, daemon threads): the launcher then kills this JVM and
// the rest of the tests run fresh. The launcher keeps the clock, the CPU time and the memory
// (protocol/src/warm.rs).

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.FileDescriptor;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.FilterOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.lang.classfile.ClassFile;
import java.lang.classfile.ClassHierarchyResolver;
import java.lang.classfile.ClassModel;
import java.lang.classfile.ClassTransform;
import java.lang.classfile.CodeTransform;
import java.lang.classfile.Opcode;
import java.lang.classfile.constantpool.MethodRefEntry;
import java.lang.classfile.constantpool.PoolEntry;
import java.lang.classfile.instruction.InvokeInstruction;
import java.lang.constant.ClassDesc;
import java.lang.constant.MethodTypeDesc;
import java.nio.charset.Charset;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.CodeSigner;
import java.security.CodeSource;
import java.security.ProtectionDomain;
import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.ForkJoinWorkerThread;

public final class OnpyrunnerJudge {
    /** How long the test's threads may take to unwind after an exit before they count as left. */
    private static final long EXIT_GRACE_MS = 200;

    private OnpyrunnerJudge() {}

    /** The work directory: the compiled classes, and the current directory of every test. */
    private static final Path WORK = Path.of("").toAbsolutePath();

    /**
     * Run one test; returns the exit code and whether this JVM can take another test. `out` and
     * `err` are the JVM's own streams, whose charset the test's streams take.
     */
    static Result test(String inputPath, List<String> runArgv, Charset outCharset, Charset errCharset)
            throws IOException, InterruptedException {
        Test test = new Test(
                new Gate(new FileOutputStream(FileDescriptor.out)),
                new Gate(new FileOutputStream(FileDescriptor.err)));
        PrintStream out = new PrintStream(new BufferedOutputStream(test.outGate, 8192), true, outCharset);
        PrintStream err = new PrintStream(new BufferedOutputStream(test.errGate, 8192), true, errCharset);
        test.out = out;
        test.err = err;
        TestLoader loader = new TestLoader(WORK);
        TestGroup group = new TestGroup();
        InputStream jvmIn = System.in;
        PrintStream jvmOut = System.out;
        PrintStream jvmErr = System.err;
        try (InputStream input = new BufferedInputStream(new FileInputStream(inputPath))) {
            System.setIn(input);
            System.setOut(out);
            System.setErr(err);
            Exit.current = test;
            Thread program = new Thread(group, () -> {
                try {
                    int code = OnpyrunnerWarm.run(runArgv, loader);
                    if (code != 0) {
                        test.failed(code);
                    }
                } catch (Exited e) {
                    // recorded by Exit
                } catch (Throwable t) {
                    // As the java launcher's main thread: the trace now, exit code 1 at the end.
                    OnpyrunnerWarm.trim(t, Collections.newSetFromMap(new IdentityHashMap<>()));
                    System.err.print("Exception in thread \"main\" ");
                    t.printStackTrace(System.err);
                    test.failed(1);
                } finally {
                    test.mainEnded();
                }
            }, "main", OnpyrunnerWarm.MAIN_STACK_BYTES);
            program.setContextClassLoader(loader);
            program.start();
            waitForProgram(test, group, program);
            if (!test.exited()) {
                test.runShutdownHooks();
            }
            test.shut();
            // main's thread is past the program but may not have ended yet, nor may the threads
            // an exit cut short: what is still running after the grace period is left over.
            boolean clean = settles(group);
            return new Result(test.code(), clean);
        } finally {
            Exit.current = null;
            test.shut();
            // What this JVM itself says (a failure of ours) goes to the real fd 2.
            System.setIn(jvmIn);
            System.setOut(jvmOut);
            System.setErr(jvmErr);
        }
    }

    record Result(int code, boolean reusable) {}

    /** Until the program exited, or main and every non-daemon thread of the test ended. */
    private static void waitForProgram(Test test, TestGroup group, Thread program)
            throws InterruptedException {
        synchronized (test) {
            // Woken by the end of main and by an exit, without polling: most tests end here.
            while (!test.exited() && !test.mainEnded) {
                test.wait();
            }
        }
        while (!test.exited()) {
            Thread waitFor = null;
            for (Thread t : threads(group)) {
                if (t != program && t.isAlive() && !t.isDaemon()) {
                    waitFor = t;
                    break;
                }
            }
            if (waitFor == null) {
                return;
            }
            // Returns as soon as the thread ends; the bound is how late an exit is seen.
            waitFor.join(5);
        }
    }

    /** Whether the test's threads end within the grace period. */
    private static boolean settles(TestGroup group) throws InterruptedException {
        long until = System.nanoTime() + EXIT_GRACE_MS * 1_000_000;
        while (!leftOver(group).isEmpty()) {
            if (System.nanoTime() > until) {
                return false;
            }
            Thread.sleep(2);
        }
        return true;
    }

    /** Threads of the test still alive; idle common-pool workers do not count (they serve anyone). */
    private static List<Thread> leftOver(TestGroup group) {
        List<Thread> left = new ArrayList<>();
        boolean poolIdle = ForkJoinPool.commonPool().isQuiescent();
        for (Thread t : threads(group)) {
            boolean idleWorker = poolIdle && t instanceof ForkJoinWorkerThread w && w.getPool() == ForkJoinPool.commonPool();
            if (t.isAlive() && !idleWorker) {
                left.add(t);
            }
        }
        return left;
    }

    private static List<Thread> threads(ThreadGroup group) {
        Thread[] all = new Thread[group.activeCount() + 16];
        int n = group.enumerate(all, true);
        return java.util.Arrays.asList(all).subList(0, n);
    }

    /** The threads of one test: named "main" as the java launcher's, and quiet about our Error. */
    private static final class TestGroup extends ThreadGroup {
        TestGroup() {
            super("main");
        }

        @Override
        public void uncaughtException(Thread t, Throwable e) {
            if (!(e instanceof Exited)) {
                super.uncaughtException(t, e);
            }
        }
    }

    /** What one test did so far. */
    static final class Test {
        final Gate outGate;
        final Gate errGate;
        PrintStream out;
        PrintStream err;
        /** An exit was called: its code is the test's. */
        private boolean exiting;
        /** That exit is done (hooks run, streams shut): the test is over. */
        private boolean exited;
        private int code;
        private final List<Thread> hooks = new ArrayList<>();

        Test(Gate outGate, Gate errGate) {
            this.outGate = outGate;
            this.errGate = errGate;
        }

        /** main's thread is done with the program (returned, threw or exited). */
        private boolean mainEnded;

        synchronized void mainEnded() {
            mainEnded = true;
            notifyAll();
        }

        synchronized boolean exited() {
            return exited;
        }

        synchronized int code() {
            return code;
        }

        /** main failed (exit code 1 for an exception): the code unless an exit came first. */
        synchronized void failed(int code) {
            if (!exiting && this.code == 0) {
                this.code = code;
            }
        }

        /**
         * The program exited. As in java's exit, the first caller runs the shutdown hooks; then
         * nothing the program prints counts (in java nothing of it would run any more).
         */
        void exit(int code) {
            synchronized (this) {
                if (exiting) {
                    return;
                }
                exiting = true;
                this.code = code;
            }
            try {
                runShutdownHooks();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            shut();
            synchronized (this) {
                exited = true;
                notifyAll();
            }
        }

        synchronized void addHook(Thread hook) {
            if (hooks.contains(hook)) {
                throw new IllegalArgumentException("Hook previously registered");
            }
            if (hook.isAlive()) {
                throw new IllegalArgumentException("Hook already running");
            }
            hooks.add(hook);
        }

        synchronized boolean removeHook(Thread hook) {
            return hooks.remove(hook);
        }

        void runShutdownHooks() throws InterruptedException {
            List<Thread> started;
            synchronized (this) {
                started = List.copyOf(hooks);
                hooks.clear();
            }
            for (Thread hook : started) {
                hook.start();
            }
            for (Thread hook : started) {
                hook.join();
            }
        }

        /** Flush what the test printed and let nothing more through. */
        void shut() {
            if (out != null) {
                out.flush();
            }
            if (err != null) {
                err.flush();
            }
            outGate.shut();
            errGate.shut();
        }
    }

    /** Passes writes to fd 1 or 2 until shut; after that drops them. */
    static final class Gate extends FilterOutputStream {
        private volatile boolean open = true;

        Gate(OutputStream out) {
            super(out);
        }

        void shut() {
            open = false;
        }

        @Override
        public void write(int b) throws IOException {
            if (open) {
                out.write(b);
            }
        }

        @Override
        public void write(byte[] b, int off, int len) throws IOException {
            if (open) {
                out.write(b, off, len);
            }
        }

        @Override
        public void close() throws IOException {
            // A program's System.out.close() must not close fd 1 of the JVM for later tests.
            flush();
            open = false;
        }
    }

    /** Thrown by Exit to end the program's thread; the code is in the Test. */
    static final class Exited extends Error {
        private static final long serialVersionUID = 1L;

        Exited() {
            super("exit", null, false, false);
        }
    }

    /** What the rewritten calls call. Public: the program's classes are in another loader. */
    public static final class Exit {
        static volatile Test current;

        private Exit() {}

        /** For System.exit(int). */
        public static void exit(int code) {
            Test test = current;
            if (test != null) {
                test.exit(code);
            }
            throw new Exited();
        }

        /** For Runtime.exit(int) and Runtime.halt(int). */
        public static void exit(Runtime runtime, int code) {
            java.util.Objects.requireNonNull(runtime);
            exit(code);
        }

        public static void addShutdownHook(Runtime runtime, Thread hook) {
            java.util.Objects.requireNonNull(runtime);
            java.util.Objects.requireNonNull(hook);
            Test test = current;
            if (test != null) {
                test.addHook(hook);
            }
        }

        public static boolean removeShutdownHook(Runtime runtime, Thread hook) {
            java.util.Objects.requireNonNull(runtime);
            java.util.Objects.requireNonNull(hook);
            Test test = current;
            return test != null && test.removeHook(hook);
        }
    }

    /**
     * The program's classes, from the work directory, with the exit calls rewritten. JDK classes
     * come first (a class file in /work cannot stand in for one), then /work, then the system
     * loader (the warm jar: Exit).
     */
    static final class TestLoader extends ClassLoader {
        private final Path dir;
        private final ProtectionDomain domain;

        TestLoader(Path dir) throws IOException {
            // Unnamed: stack trace lines then read "at Main.main(Main.java:3)" as under java,
            // where a named loader would prefix its name.
            super(ClassLoader.getSystemClassLoader());
            this.dir = dir;
            this.domain = new ProtectionDomain(
                    new CodeSource(dir.toUri().toURL(), (CodeSigner[]) null), null, this, null);
        }

        @Override
        protected Class<?> loadClass(String name, boolean resolve) throws ClassNotFoundException {
            synchronized (getClassLoadingLock(name)) {
                Class<?> c = findLoadedClass(name);
                if (c == null) {
                    try {
                        c = ClassLoader.getPlatformClassLoader().loadClass(name);
                    } catch (ClassNotFoundException e) {
                        // not the JDK's
                    }
                }
                if (c == null && !name.startsWith("OnpyrunnerWarm") && !name.startsWith("OnpyrunnerJudge")) {
                    c = fromDir(name);
                }
                if (c == null) {
                    return super.loadClass(name, resolve);
                }
                if (resolve) {
                    resolveClass(c);
                }
                return c;
            }
        }

        private Class<?> fromDir(String name) throws ClassNotFoundException {
            Path file = dir.resolve(name.replace('.', '/') + ".class");
            if (!Files.isRegularFile(file)) {
                return null;
            }
            byte[] bytes;
            try {
                bytes = Rewrite.exits(Files.readAllBytes(file), this);
            } catch (IOException e) {
                throw new ClassNotFoundException(name, e);
            }
            return defineClass(name, bytes, 0, bytes.length, domain);
        }
    }

    /** The rewrite of exit calls into calls to Exit. */
    static final class Rewrite {
        private static final ClassDesc EXIT = ClassDesc.of(Exit.class.getName());
        private static final MethodTypeDesc OF_INT = MethodTypeDesc.ofDescriptor("(I)V");
        private static final MethodTypeDesc OF_RUNTIME_INT =
                MethodTypeDesc.ofDescriptor("(Ljava/lang/Runtime;I)V");
        private static final MethodTypeDesc OF_RUNTIME_THREAD =
                MethodTypeDesc.ofDescriptor("(Ljava/lang/Runtime;Ljava/lang/Thread;)V");
        private static final MethodTypeDesc OF_RUNTIME_THREAD_Z =
                MethodTypeDesc.ofDescriptor("(Ljava/lang/Runtime;Ljava/lang/Thread;)Z");

        private Rewrite() {}

        /** `bytes` with the calls rewritten; unchanged when there are none (or it does not parse). */
        static byte[] exits(byte[] bytes, ClassLoader loader) {
            ClassFile files = ClassFile.of(ClassFile.ClassHierarchyResolverOption.of(
                    ClassHierarchyResolver.ofResourceParsing(loader)
                            .orElse(ClassHierarchyResolver.defaultResolver())));
            ClassModel model;
            try {
                model = files.parse(bytes);
                if (!mentions(model)) {
                    return bytes;
                }
            } catch (IllegalArgumentException e) {
                // Not a class file we can read: defineClass says what is wrong, as java would.
                return bytes;
            }
            CodeTransform calls = (code, element) -> {
                if (element instanceof InvokeInstruction call && replace(call, code)) {
                    return;
                }
                code.with(element);
            };
            return files.transformClass(model, ClassTransform.transformingMethodBodies(calls));
        }

        private static boolean mentions(ClassModel model) {
            for (PoolEntry entry : model.constantPool()) {
                if (entry instanceof MethodRefEntry ref
                        && target(ref.owner().asInternalName(), ref.name().stringValue(), ref.type().stringValue()) != null) {
                    return true;
                }
            }
            return false;
        }

        /** The Exit method for a call, or null. */
        private static String target(String owner, String name, String type) {
            if (owner.equals("java/lang/System")) {
                return name.equals("exit") && type.equals("(I)V") ? "exit" : null;
            }
            if (owner.equals("java/lang/Runtime")) {
                return switch (name + type) {
                    case "exit(I)V", "halt(I)V" -> "exit";
                    case "addShutdownHook(Ljava/lang/Thread;)V" -> "addShutdownHook";
                    case "removeShutdownHook(Ljava/lang/Thread;)Z" -> "removeShutdownHook";
                    default -> null;
                };
            }
            return null;
        }

        private static boolean replace(InvokeInstruction call, java.lang.classfile.CodeBuilder code) {
            String target = target(call.owner().asInternalName(), call.name().stringValue(), call.type().stringValue());
            if (target == null) {
                return false;
            }
            boolean isStatic = call.opcode() == Opcode.INVOKESTATIC;
            if (call.owner().asInternalName().equals("java/lang/System") != isStatic) {
                return false;
            }
            MethodTypeDesc type = switch (target) {
                case "exit" -> isStatic ? OF_INT : OF_RUNTIME_INT;
                case "addShutdownHook" -> OF_RUNTIME_THREAD;
                default -> OF_RUNTIME_THREAD_Z;
            };
            code.invokestatic(EXIT, target, type);
            return true;
        }
    }
}

// The warm process of the Java image (the `warm` field of images/languages.toml).
//
// Started by the launcher when the container starts, long before the run arrives: it loads
// javac and warms it up on a dummy program, says "ready" on fd 4 and blocks on fd 3. When the
// run comes, it compiles the user's sources in-process with javax.tools (same arguments as the
// table's javac command) and runs Main.main(args) in this very JVM, whose fd 0/1/2 are the
// container's. Its exit status is the program's: System.exit(n) gives n, an uncaught exception
// prints the stack trace the `java` launcher prints and gives 1.
//
// The control messages and what the launcher trusts are described in
// protocol/src/warm.rs. Nothing may be written on fd 1 or 2 before "ready": the supervisor
// reads the launcher's readiness marker as the first thing on stdout.
//
// Compiled into a jar at image build time (`warm_build` in images/languages.toml); `--train` runs
// only the warm-up, for the AOT cache made at the same time.

import java.io.BufferedInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.io.OutputStreamWriter;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.lang.reflect.Constructor;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Set;
import javax.tools.JavaCompiler;
import javax.tools.JavaFileObject;
import javax.tools.StandardJavaFileManager;
import javax.tools.ToolProvider;

public final class OnpyrunnerWarm {
    /** Exit codes of javac's launcher (com.sun.tools.javac.main.Main.Result). */
    private static final int JAVAC_ERROR = 1;
    private static final int JAVAC_CMDERR = 2;
    private static final int JAVAC_ABNORMAL = 4;
    /** Same bound as protocol/src/warm.rs MAX_MESSAGE_LEN. */
    private static final int MAX_MESSAGE_LEN = 4 * 1024 * 1024;
    private static final int MAX_STRINGS = 1024;
    /** The stack of the program's main thread: Baekjoon's -Xss512m. */
    static final long MAIN_STACK_BYTES = 512L << 20;
    /** How often the warm-up compiles and runs its dummy program. */
    private static final int WARM_UP_ROUNDS = 6;

    private OnpyrunnerWarm() {}

    public static void main(String[] argv) throws Throwable {
        JavaCompiler javac = ToolProvider.getSystemJavaCompiler();
        // One file manager for the warm-up and the run: it keeps the JDK's module image open
        // and its indexes loaded, which is most of what a second compilation saves.
        StandardJavaFileManager files =
                javac.getStandardFileManager(null, null, StandardCharsets.UTF_8);
        warmUp(javac, files);
        if (argv.length == 1 && argv[0].equals("--train")) {
            return;
        }
        DataInputStream control =
                new DataInputStream(new BufferedInputStream(new FileInputStream("/proc/self/fd/3")));
        OutputStream replies = new FileOutputStream("/proc/self/fd/4");
        send(replies, "ready");
        List<String> message = receive(control);
        if (message.get(0).equals("compile")) {
            int code = compile(javac, files, message.subList(1, message.size()), System.err);
            send(replies, "compiled", Integer.toString(code));
            message = receive(control);
        }
        if (message.get(0).equals("test")) {
            serveTests(control, replies, message);
            return;
        }
        if (!message.get(0).equals("run")) {
            throw new IOException("unexpected control message " + message.get(0));
        }
        control.close();
        replies.close();
        List<String> runArgv = message.subList(1, message.size());
        // The program's main runs in a thread named "main" with the stack Baekjoon gives
        // (-Xss512m; the memory limit bounds it anyway), so a recursive DFS of 10^5 nodes
        // works. javac above keeps the JVM's default stack: a compile bomb still ends as a
        // compile error. What main throws is rethrown here, where the java launcher prints it
        // and exits 1, as after its own main.
        Throwable[] thrown = new Throwable[1];
        Thread program = new Thread(null, () -> {
            try {
                int code = run(runArgv, ClassLoader.getSystemClassLoader());
                if (code != 0) {
                    System.exit(code);
                }
            } catch (Throwable t) {
                thrown[0] = t;
            }
        }, "main", MAIN_STACK_BYTES);
        program.start();
        program.join();
        if (thrown[0] != null) {
            throw thrown[0];
        }
    }

    /**
     * A judged run: each test in this JVM (OnpyrunnerJudge), until the launcher hangs up or
     * kills it. `message` is the first test's.
     */
    private static void serveTests(DataInputStream control, OutputStream replies, List<String> message)
            throws Exception {
        java.nio.charset.Charset out = System.out.charset();
        java.nio.charset.Charset err = System.err.charset();
        while (true) {
            if (message.size() < 3 || !message.get(0).equals("test")) {
                throw new IOException("unexpected control message " + message.get(0));
            }
            OnpyrunnerJudge.Result result =
                    OnpyrunnerJudge.test(message.get(1), message.subList(2, message.size()), out, err);
            String code = Integer.toString(result.code());
            if (result.reusable()) {
                send(replies, "tested", code);
            } else {
                send(replies, "tested", code, "last");
            }
            try {
                message = receive(control);
            } catch (java.io.EOFException e) {
                // Hung up: no more tests. Threads a test left must not keep this JVM alive.
                Runtime.getRuntime().halt(0);
            }
        }
    }

    // ---- Control messages: u32 body length, u32 count, then u32 length + UTF-8 per string.

    private static void send(OutputStream out, String... parts) throws IOException {
        ByteArrayOutputStream body = new ByteArrayOutputStream();
        DataOutputStream data = new DataOutputStream(body);
        data.writeInt(parts.length);
        for (String part : parts) {
            byte[] bytes = part.getBytes(StandardCharsets.UTF_8);
            data.writeInt(bytes.length);
            data.write(bytes);
        }
        ByteArrayOutputStream whole = new ByteArrayOutputStream();
        new DataOutputStream(whole).writeInt(body.size());
        body.writeTo(whole);
        out.write(whole.toByteArray());
        out.flush();
    }

    private static List<String> receive(DataInputStream in) throws IOException {
        int len = in.readInt();
        if (len < 4 || len > MAX_MESSAGE_LEN) {
            throw new IOException("bad control message length " + len);
        }
        byte[] body = new byte[len];
        in.readFully(body);
        DataInputStream data = new DataInputStream(new java.io.ByteArrayInputStream(body));
        int count = data.readInt();
        if (count < 1 || count > MAX_STRINGS) {
            throw new IOException("bad control message count " + count);
        }
        List<String> parts = new ArrayList<>(count);
        for (int i = 0; i < count; i++) {
            byte[] bytes = new byte[data.readInt()];
            data.readFully(bytes);
            parts.add(new String(bytes, StandardCharsets.UTF_8));
        }
        return parts;
    }

    // ---- Compile: the table's javac argv, in-process.

    /**
     * Compile with javac's command-line arguments (argv[0] is "javac"). -J options are for the
     * javac launcher's JVM, which is this one, already running. Returns javac's exit code.
     */
    static int compile(
            JavaCompiler javac, StandardJavaFileManager files, List<String> argv, PrintStream diagnostics) {
        List<String> options = new ArrayList<>();
        List<String> sources = new ArrayList<>();
        boolean classPathGiven = false;
        for (String arg : argv.subList(1, argv.size())) {
            if (arg.startsWith("-J")) {
                continue;
            }
            if (arg.equals("-cp") || arg.equals("-classpath") || arg.equals("--class-path")) {
                classPathGiven = true;
            }
            if (arg.endsWith(".java") && !arg.startsWith("-")) {
                sources.add(arg);
            } else {
                options.add(arg);
            }
        }
        // The javac launcher's default class path is "."; in-process javac would take this
        // JVM's java.class.path instead.
        if (!classPathGiven) {
            options.add("-classpath");
            options.add(".");
        }
        PrintWriter out = new PrintWriter(new OutputStreamWriter(diagnostics, StandardCharsets.UTF_8));
        try {
            if (sources.isEmpty()) {
                out.println("error: no source files");
                return JAVAC_CMDERR;
            }
            Iterable<? extends JavaFileObject> units = files.getJavaFileObjectsFromStrings(sources);
            Boolean ok = javac.getTask(out, files, null, options, null, units).call();
            return Boolean.TRUE.equals(ok) ? 0 : JAVAC_ERROR;
        } catch (IllegalArgumentException | IllegalStateException e) {
            out.println("error: " + e.getMessage());
            return JAVAC_CMDERR;
        } catch (RuntimeException e) {
            out.println("An exception has occurred in the compiler: " + e);
            return JAVAC_ABNORMAL;
        } finally {
            out.flush();
        }
    }

    // ---- Run: the table's java argv plus the program's arguments, in this JVM.

    /**
     * Run `java [options] MainClass args...` in-process, MainClass from `loader`. The JVM
     * options were given when this JVM started; the class path too (it includes the work
     * directory), so -cp is skipped. Returns the java launcher's exit code for what failed
     * before main (the message printed), 0 once main returned; what main throws is rethrown.
     */
    static int run(List<String> argv, ClassLoader loader) throws Throwable {
        int at = 1;
        while (at < argv.size() && argv.get(at).startsWith("-")) {
            String option = argv.get(at);
            at += option.equals("-cp") || option.equals("-classpath") || option.equals("--class-path") ? 2 : 1;
        }
        if (at >= argv.size()) {
            System.err.println("Error: no main class given");
            return 1;
        }
        String className = argv.get(at);
        String[] args = argv.subList(at + 1, argv.size()).toArray(new String[0]);
        Class<?> mainClass;
        try {
            mainClass = Class.forName(className, false, loader);
        } catch (ClassNotFoundException | LinkageError e) {
            System.err.println("Error: Could not find or load main class " + className);
            System.err.println("Caused by: " + e);
            return 1;
        }
        Method main = findMain(mainClass);
        if (main == null) {
            System.err.println("Error: Main method not found in class " + className
                    + ", please define the main method as:\n   public static void main(String[] args)\n"
                    + "or a JavaFX application class must extend javafx.application.Application");
            return 1;
        }
        try {
            main.setAccessible(true);
            Object receiver = null;
            if (!Modifier.isStatic(main.getModifiers())) {
                Constructor<?> constructor = mainClass.getDeclaredConstructor();
                constructor.setAccessible(true);
                receiver = constructor.newInstance();
            }
            if (main.getParameterCount() == 1) {
                main.invoke(receiver, (Object) args);
            } else {
                main.invoke(receiver);
            }
        } catch (InvocationTargetException e) {
            // Rethrown from main: the JVM prints "Exception in thread "main" ..." through the
            // thread's uncaught-exception handler and exits 1 once non-daemon threads end, as
            // after a java launcher's main.
            Throwable thrown = e.getCause();
            trim(thrown, Collections.newSetFromMap(new IdentityHashMap<>()));
            throw thrown;
        } catch (NoSuchMethodException e) {
            System.err.println("Error: no non-private zero argument constructor found in class " + className);
            return 1;
        }
        return 0;
    }

    /**
     * The method the java launcher would pick (JEP 512): main(String[]) before main(), static
     * or instance, not private, declared or inherited.
     */
    private static Method findMain(Class<?> cls) {
        for (Class<?>[] params : List.of(new Class<?>[] {String[].class}, new Class<?>[0])) {
            for (Class<?> c = cls; c != null; c = c.getSuperclass()) {
                try {
                    Method m = c.getDeclaredMethod("main", params);
                    if (!Modifier.isPrivate(m.getModifiers()) && m.getReturnType() == void.class) {
                        return m;
                    }
                } catch (NoSuchMethodException e) {
                    // look further up
                }
            }
        }
        return null;
    }

    /**
     * Cut this class's, reflection's and the program thread's frames off the bottom of every
     * stack trace.
     */
    static void trim(Throwable t, Set<Throwable> seen) {
        if (t == null || !seen.add(t)) {
            return;
        }
        StackTraceElement[] trace = t.getStackTrace();
        int end = trace.length;
        while (end > 0 && isMachinery(trace[end - 1])) {
            end--;
        }
        if (end < trace.length && end > 0) {
            t.setStackTrace(Arrays.copyOf(trace, end));
        }
        trim(t.getCause(), seen);
        for (Throwable s : t.getSuppressed()) {
            trim(s, seen);
        }
    }

    private static boolean isMachinery(StackTraceElement frame) {
        String cls = frame.getClassName();
        return cls.equals(OnpyrunnerWarm.class.getName())
                || cls.startsWith(OnpyrunnerJudge.class.getName())
                || cls.equals("java.lang.Thread")
                || cls.startsWith("jdk.internal.reflect.")
                || cls.equals("java.lang.reflect.Method")
                || cls.equals("java.lang.reflect.Constructor");
    }

    // ---- Warm-up: compile and run a dummy program a few times, writing nothing anywhere.

    private static final String DUMMY = String.join("\n",
            "import java.util.*;",
            "import java.util.stream.*;",
            "import java.io.*;",
            "public class OnpyrunnerDummy {",
            "    record Point(int x, int y) { int sum() { return x + y; } }",
            "    enum Color { RED, GREEN }",
            "    interface Shape { double area(); }",
            "    static final class Sq implements Shape { public double area() { return 4.0; } }",
            "    static <T extends Comparable<T>> T max(List<T> xs) { return Collections.max(xs); }",
            "    public static void main(String[] args) throws Exception {",
            "        PrintStream out = new PrintStream(OutputStream.nullOutputStream(), true, \"UTF-8\");",
            "        Scanner in = new Scanner(\"3 4\\nhello world\\n\");",
            "        int a = in.nextInt(), b = in.nextInt(); in.nextLine();",
            "        String line = in.nextLine();",
            "        BufferedReader br = new BufferedReader(new StringReader(\"1 2 3\\n\"));",
            "        StringTokenizer st = new StringTokenizer(br.readLine());",
            "        long total = 0; while (st.hasMoreTokens()) total += Long.parseLong(st.nextToken());",
            "        List<Integer> xs = IntStream.range(0, 100).boxed().collect(Collectors.toList());",
            "        Map<String, Integer> m = new HashMap<>(); m.merge(line, a + b, Integer::sum);",
            "        Object o = new Point(a, b);",
            "        String kind = switch (o) { case Point p when p.x() > 0 -> \"p\" + p.sum(); default -> \"?\"; };",
            "        Shape s = new Sq(); Color c = Color.valueOf(\"RED\");",
            "        StringBuilder sb = new StringBuilder();",
            "        for (int i = 0; i < 10; i++) sb.append(i).append(' ');",
            "        out.println(\"Hello, \" + line + \" \" + a + b + kind + c + s.area() + max(xs) + total + m);",
            "        out.printf(\"%d %.2f %s%n\", a, Math.sqrt(b), Arrays.toString(new int[] {a, b}));",
            "        if (args.length > 1) System.exit(3);",
            "        if (args.length > 0) throw new IllegalStateException(String.valueOf(sb));",
            "    }",
            "}",
            "");

    private static void warmUp(JavaCompiler javac, StandardJavaFileManager files) throws Exception {
        PrintStream quiet = new PrintStream(OutputStream.nullOutputStream(), true, StandardCharsets.UTF_8);
        Path dir = Files.createTempDirectory("onpyrunner-warm");
        try {
            Path source = dir.resolve("OnpyrunnerDummy.java");
            Files.writeString(source, DUMMY);
            for (int round = 0; round < WARM_UP_ROUNDS; round++) {
                List<String> argv = List.of(
                        "javac", "-encoding", "UTF-8", "-d", dir.toString(), "-classpath", dir.toString(),
                        source.toString());
                if (compile(javac, files, argv, quiet) != 0) {
                    throw new IllegalStateException("the warm-up program does not compile");
                }
                // A loader of its own, so nothing of the dummy stays visible to the program; a
                // judged test's loader, so a judged run finds its class rewriting warm too.
                ClassLoader loader = new OnpyrunnerJudge.TestLoader(dir);
                Method main = findMain(Class.forName("OnpyrunnerDummy", true, loader));
                try {
                    main.invoke(null, (Object) new String[] {"throw"});
                } catch (InvocationTargetException expected) {
                    trim(expected.getCause(), Collections.newSetFromMap(new IdentityHashMap<>()));
                    expected.getCause().printStackTrace(quiet);
                }
            }
        } finally {
            try (var walk = Files.walk(dir)) {
                walk.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
    }
}

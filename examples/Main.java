import java.util.Scanner;

public class Main {
    public static void main(String[] args) {
        System.out.print("What is your name? ");
        Scanner in = new Scanner(System.in);
        String name = in.hasNextLine() ? in.nextLine() : "stranger";
        System.out.println("\nHello, " + name + "! This is Java " + System.getProperty("java.version") + ".");
    }
}

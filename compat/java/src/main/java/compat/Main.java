package compat;

import java.util.Map;
import java.util.TreeMap;

/**
 * Runs one scenario, named by the first argument, and tells the harness its verdict: "PASS", or
 * "FAIL reason". The process then exits, whatever client threads are still running.
 */
public final class Main {
    /** One scenario: throws {@link Ctx.Failure} (or anything else) when a check fails. */
    @FunctionalInterface
    interface Scenario {
        void run(Ctx ctx) throws Exception;
    }

    private static Map<String, Scenario> catalogue() {
        Map<String, Scenario> all = new TreeMap<>();
        ProducerScenarios.register(all);
        ConsumerScenarios.register(all);
        AdminScenarios.register(all);
        MqadminScenarios.register(all);
        FeatureScenarios.register(all);
        ErrorScenarios.register(all);
        return all;
    }

    public static void main(String[] args) {
        int exitCode;
        if (args.length != 1) {
            System.out.println("FAIL usage: compat.Main <scenario>");
            exitCode = 2;
        } else {
            Scenario scenario = catalogue().get(args[0]);
            if (scenario == null) {
                System.out.println("FAIL no Java scenario named " + args[0]);
                exitCode = 2;
            } else {
                exitCode = runOne(args[0], scenario);
            }
        }
        System.out.flush();
        Runtime.getRuntime().halt(exitCode);
    }

    private static int runOne(String name, Scenario scenario) {
        try (Ctx ctx = new Ctx(name)) {
            scenario.run(ctx);
            System.out.println("PASS");
            return 0;
        } catch (Ctx.Failure failure) {
            System.out.println("FAIL " + oneLine(failure.getMessage()));
            return 1;
        } catch (Throwable error) {
            error.printStackTrace();
            // The client wraps what the broker said ("send message Exception"): show the root too.
            Throwable root = error;
            while (root.getCause() != null && root.getCause() != root) {
                root = root.getCause();
            }
            String reason = root == error ? error.toString() : error + "; caused by " + root;
            System.out.println("FAIL " + oneLine(reason));
            return 1;
        }
    }

    static String oneLine(String text) {
        return text == null ? "(no message)" : text.replace('\n', ' ').replace('\r', ' ');
    }
}

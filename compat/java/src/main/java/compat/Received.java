package compat;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import org.apache.rocketmq.common.message.MessageExt;

/** Messages a consumer got, by number, in arrival order; safe to fill from client threads. */
final class Received {
    private final List<MessageExt> arrivals = new ArrayList<>();

    synchronized void add(MessageExt message) {
        arrivals.add(message);
    }

    synchronized void addAll(List<MessageExt> messages) {
        arrivals.addAll(messages);
    }

    synchronized List<MessageExt> all() {
        return new ArrayList<>(arrivals);
    }

    synchronized int size() {
        return arrivals.size();
    }

    synchronized Set<Integer> numbers() {
        Set<Integer> numbers = new TreeSet<>();
        arrivals.forEach(m -> numbers.add(Msgs.idx(m)));
        return numbers;
    }

    /** Each message's first arrival. */
    synchronized List<MessageExt> firstArrivals() {
        Map<Integer, MessageExt> first = new TreeMap<>();
        arrivals.forEach(m -> first.putIfAbsent(Msgs.idx(m), m));
        return new ArrayList<>(first.values());
    }

    synchronized int duplicates() {
        return arrivals.size() - numbers().size();
    }

    /** Waits until every number in `expected` arrived; fails naming the missing ones. */
    void awaitAll(Set<Integer> expected, long timeoutMs) throws Exception {
        try {
            Ctx.waitUntil("delivery of all " + expected.size() + " messages", timeoutMs,
                    () -> numbers().containsAll(expected));
        } catch (Ctx.Failure failure) {
            Set<Integer> missing = new TreeSet<>(expected);
            missing.removeAll(numbers());
            throw new Ctx.Failure(failure.getMessage() + "; missing " + missing);
        }
    }

    /** Fails if anything is missing, arrived damaged, unexpected, or (when `once`) more than once. */
    void checkExactly(Set<Integer> expected, boolean once) {
        Set<Integer> missing = new TreeSet<>(expected);
        missing.removeAll(numbers());
        Ctx.check(missing.isEmpty(), "never delivered: %s", missing);
        for (MessageExt message : all()) {
            String damage = Msgs.damage(message);
            Ctx.check(damage == null, "delivered damaged: %s", damage);
        }
        Set<Integer> unexpected = new TreeSet<>(numbers());
        unexpected.removeAll(expected);
        Ctx.check(unexpected.isEmpty(), "delivered messages never sent to this subscription: %s", unexpected);
        if (once) {
            Ctx.check(duplicates() == 0, "%d messages delivered more than once", duplicates());
        }
    }

    static Set<Integer> range(int from, int count) {
        Set<Integer> numbers = new TreeSet<>();
        for (int idx = from; idx < from + count; idx++) {
            numbers.add(idx);
        }
        return numbers;
    }
}

package compat;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.common.message.MessageExt;

/**
 * The scenarios' messages: numbered, with a body, tag, keys and user properties that must all
 * come back exactly as sent, including characters outside ASCII and the property separators'
 * neighbours (`=`, `;`, `:`).
 */
final class Msgs {
    static final String NOTE = "a=b;c:d é ✓";

    private Msgs() {
    }

    static String body(int idx) {
        return "body-" + idx + "-é✓";
    }

    static Message make(String topic, int idx, String tag) {
        Message message = new Message(topic, tag, "key-" + idx, body(idx).getBytes(StandardCharsets.UTF_8));
        message.putUserProperty("idx", Integer.toString(idx));
        message.putUserProperty("note", NOTE);
        // The tag again, where a broker has no reason to touch it, to check TAGS against.
        message.putUserProperty("sentTag", tag);
        return message;
    }

    static List<Message> make(String topic, int from, int count, String... tags) {
        List<Message> messages = new ArrayList<>();
        for (int idx = from; idx < from + count; idx++) {
            messages.add(make(topic, idx, tags[idx % tags.length]));
        }
        return messages;
    }

    /** The message's number, or -1 when the property is missing or mangled. */
    static int idx(MessageExt message) {
        try {
            return Integer.parseInt(message.getUserProperty("idx"));
        } catch (NumberFormatException error) {
            return -1;
        }
    }

    /** Null when body, tags, keys and properties are what {@link #make} sent for its number; else what is wrong. */
    static String damage(MessageExt message) {
        int idx = idx(message);
        if (idx < 0) {
            return "property idx missing or mangled: " + message.getProperties();
        }
        String body = new String(message.getBody(), StandardCharsets.UTF_8);
        if (!body.equals(body(idx))) {
            return "message " + idx + " body is " + body;
        }
        if (!("key-" + idx).equals(message.getKeys())) {
            return "message " + idx + " keys are " + message.getKeys();
        }
        if (!String.valueOf(message.getUserProperty("sentTag")).equals(message.getTags())) {
            return "message " + idx + " tags are " + message.getTags() + ", sent "
                    + message.getUserProperty("sentTag");
        }
        if (!NOTE.equals(message.getUserProperty("note"))) {
            return "message " + idx + " property note is " + message.getUserProperty("note");
        }
        return null;
    }

    /** What a user sees of a message, without ids, times or addresses (they differ per broker). */
    static Map<String, Object> describe(MessageExt message) {
        Map<String, Object> fields = new LinkedHashMap<>();
        fields.put("idx", idx(message));
        fields.put("body", new String(message.getBody(), StandardCharsets.UTF_8));
        fields.put("tags", message.getTags());
        fields.put("keys", message.getKeys());
        fields.put("note", message.getUserProperty("note"));
        return fields;
    }

    static List<Map<String, Object>> describeSorted(List<MessageExt> messages) {
        List<Map<String, Object>> described = new ArrayList<>();
        messages.stream().sorted(Comparator.comparingInt(Msgs::idx)).forEach(m -> described.add(describe(m)));
        return described;
    }
}

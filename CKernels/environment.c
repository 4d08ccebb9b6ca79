// environment.c: reading ATTENTION_* variables, and the warning for a value
// that cannot be used (environment.h).
#include "environment.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *attn_environment_value(const char *variable) {
    const char *value = getenv(variable);
    return value && value[0] ? value : 0;
}

// At most this many bytes of a value are shown: a huge value cannot flood the
// terminal.
enum { SHOWN_VALUE_BYTES = 40 };

// `value`'s first SHOWN_VALUE_BYTES bytes into `shown` (room for 4 characters
// a byte and the NUL): printable ASCII as is, `"` and `\` as \" and \\, any
// other byte (control, DEL, non-ASCII) as \xNN, so that the value cannot end
// the line, move the cursor or change the terminal's state. Returns its length
// in bytes.
static size_t show_value(const char *value, char shown[4 * SHOWN_VALUE_BYTES + 1]) {
    static const char hex[] = "0123456789abcdef";
    const size_t length = strlen(value);
    char *out = shown;
    for (size_t i = 0; i < length && i < SHOWN_VALUE_BYTES; i++) {
        const unsigned char byte = (unsigned char)value[i];
        if (byte == '"' || byte == '\\') {
            *out++ = '\\';
            *out++ = (char)byte;
        } else if (byte >= 0x20 && byte < 0x7f) {
            *out++ = (char)byte;
        } else {
            *out++ = '\\';
            *out++ = 'x';
            *out++ = hex[byte >> 4];
            *out++ = hex[byte & 15];
        }
    }
    *out = 0;
    return length;
}

void attn_environment_warning(atomic_int *once, const char *variable, const char *value, const char *problem,
                              const char *fallback) {
    if (atomic_exchange(once, 1)) return;  // another thread (or an earlier call) has warned
    char shown[4 * SHOWN_VALUE_BYTES + 1];
    const size_t length = show_value(value, shown);
    // One fprintf: the line reaches stderr in one write, not interleaved.
    if (length > SHOWN_VALUE_BYTES)
        fprintf(stderr, "attention: ignoring %s=\"%s\"... (%zu bytes): %s; using %s\n", variable, shown, length, problem,
                fallback);
    else
        fprintf(stderr, "attention: ignoring %s=\"%s\": %s; using %s\n", variable, shown, problem, fallback);
}

// environment.c: reading ATTENTION_* variables, and the warning for a value
// that cannot be used (environment.h).
#include "environment.h"

#include <stdio.h>
#include <stdlib.h>

const char *attn_environment_value(const char *variable) {
    const char *value = getenv(variable);
    return value && value[0] ? value : 0;
}

void attn_environment_warning(atomic_int *once, const char *variable, const char *value, const char *problem,
                              const char *fallback) {
    if (atomic_exchange(once, 1)) return;  // another thread (or an earlier call) has warned
    // One fprintf: the line reaches stderr in one write, not interleaved.
    fprintf(stderr, "attention: ignoring %s=\"%s\": %s; using %s\n", variable, value, problem, fallback);
}

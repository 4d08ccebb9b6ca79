// environment.h: the one warning for an ATTENTION_* variable the C target
// cannot use (internal). A value that is set, not empty and not accepted gives
//
//   attention: ignoring ATTENTION_IDLE_WAIT="spinn": expected spin, sleep or runtime; using sleep
//
// on stderr, once per process and variable, and the call goes on with the
// default: a misspelt setting is never silently ignored, and never fatal. The
// value is shown safely: at most its first 40 bytes (a longer one as
// NAME="first 40 bytes"... (N bytes)), printable ASCII as is, `"` and `\` as
// \" and \\, any other byte as \xNN, so that a huge or binary value can neither
// flood nor corrupt the terminal.
// Read: ATTENTION_KERNEL_PATH (microkernels/dispatch.c), ATTENTION_IDLE_WAIT
// (plan.c); ATTENTION_THREADING is read by the Swift module, with the same words.
#ifndef CATTENTION_ENVIRONMENT_H
#define CATTENTION_ENVIRONMENT_H

#include <stdatomic.h>

// `variable`'s value, or NULL when it is unset or empty (empty means unset).
const char *attn_environment_value(const char *variable);

// Writes the line above for `variable`="`value`" (shown safely): `problem`
// (what is wrong, e.g. "expected spin, sleep or runtime") and `fallback` (what
// is used instead). Only the first call for a given `once` flag writes.
void attn_environment_warning(atomic_int *once, const char *variable, const char *value, const char *problem,
                              const char *fallback);

#endif

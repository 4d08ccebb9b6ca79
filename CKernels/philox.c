// philox.c: the counter-based generator behind dropout.
//
// Philox-4x32-10 from Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as
// easy as 1, 2, 3" (SC 2011), with the constants of the paper and of Random123.
// A counter-based generator lets every cell (batch, head, row, column) draw its
// own number from its coordinates alone, so the fused kernel and the oracle drop
// the same cells whatever the tiling or thread count.
#include "attention.h"

enum {
    PHILOX_ROUNDS = 10,
};
static const uint32_t PHILOX_M0 = 0xD2511F53u;  // round multipliers
static const uint32_t PHILOX_M1 = 0xCD9E8D57u;
static const uint32_t PHILOX_W0 = 0x9E3779B9u;  // Weyl key increments (golden ratio, √3 − 1)
static const uint32_t PHILOX_W1 = 0xBB67AE85u;

void attn_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < PHILOX_ROUNDS; round++) {
        if (round > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        const uint64_t product0 = (uint64_t)PHILOX_M0 * c0;
        const uint64_t product1 = (uint64_t)PHILOX_M1 * c2;
        const uint32_t hi0 = (uint32_t)(product0 >> 32), lo0 = (uint32_t)product0;
        const uint32_t hi1 = (uint32_t)(product1 >> 32), lo1 = (uint32_t)product1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

int attn_philox_keep(uint64_t seed, int64_t batch, int64_t head, int64_t row,
                     int64_t column, float dropout_p) {
    const uint32_t counter[4] = {
        (uint32_t)(column / 4), (uint32_t)row, (uint32_t)head, (uint32_t)batch,
    };
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t word[4];
    attn_philox4x32_10(counter, key, word);
    // A 24-bit uniform in [0, 1): exactly representable in float32.
    const float uniform = (float)(word[column % 4] >> 8) * 0x1.0p-24f;
    return uniform >= dropout_p;
}

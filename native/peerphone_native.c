/* peerphone's native routines: see peerphone_native.h. */

#include <stddef.h>
#include <stdint.h>

#include "peerphone_native.h"

/* -- XOR distance -- */

/* The first 8 bytes of an id as a number (compilers make this one load and a byte swap). */
static uint64_t prefix64(const unsigned char *p) {
    return (uint64_t)p[0] << 56 | (uint64_t)p[1] << 48 | (uint64_t)p[2] << 40 | (uint64_t)p[3] << 32 |
           (uint64_t)p[4] << 24 | (uint64_t)p[5] << 16 | (uint64_t)p[6] << 8 | (uint64_t)p[7];
}

/* Whether id a is nearer to target than id b, given their prefixes. */
static int nearer(uint64_t pa, uint64_t pb, const unsigned char *a, const unsigned char *b,
                  const unsigned char *target, size_t width) {
    if (pa != pb)
        return pa < pb;
    for (size_t i = 8; i < width; i++) {
        unsigned char da = a[i] ^ target[i], db = b[i] ^ target[i];
        if (da != db)
            return da < db;
    }
    return 0;
}

#define XOR_K_MAX 256

size_t pp_xor_closest(const unsigned char *ids, size_t count, size_t width, const unsigned char *target, size_t k,
                      uint32_t *out) {
    /* keys[j]: the first 8 bytes of out[j]'s distance, which almost always order two
     * ids; ties go to the remaining bytes. out[0..kept) is nearest first. */
    uint64_t keys[XOR_K_MAX];
    uint64_t target_prefix = prefix64(target);
    size_t kept = 0;
    if (k > XOR_K_MAX)
        k = XOR_K_MAX;
    if (k == 0)
        return 0;
    for (size_t i = 0; i < count; i++) {
        const unsigned char *id = ids + i * width;
        uint64_t key = prefix64(id) ^ target_prefix;
        if (kept == k && !nearer(key, keys[kept - 1], id, ids + (size_t)out[kept - 1] * width, target, width))
            continue;
        size_t j = kept < k ? kept++ : kept - 1;
        while (j > 0 && nearer(key, keys[j - 1], id, ids + (size_t)out[j - 1] * width, target, width)) {
            out[j] = out[j - 1];
            keys[j] = keys[j - 1];
            j--;
        }
        out[j] = (uint32_t)i;
        keys[j] = key;
    }
    return kept;
}

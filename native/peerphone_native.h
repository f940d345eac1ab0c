/* peerphone's native routines. This header is also the cffi declaration
 * (native/build.py reads it), so it holds only what cffi's parser accepts.
 *
 * Ids are unsigned big-endian integers of `width` bytes (8..20): 20 for 160-bit ids,
 * 16 for RELOAD's default 128-bit ids. Every routine has a pure-Python twin in
 * firmware/peerphone/_accel/pure.py that gives the same answers.
 *
 * Only what measured faster than the Python the core would otherwise run is here
 * (tools/bench native): SHA-1 stays with hashlib (OpenSSL), ring tests and the
 * finger search with Python ints and bisect.
 */

/* Indices of the (at most) `k` ids of `ids` (`count` of them, `width` bytes
 * each) closest to `target` by XOR, closest first, written to `out`; returns
 * how many were written (k above 256 counts as 256). Kademlia's k-closest selection. */
size_t pp_xor_closest(const unsigned char *ids, size_t count, size_t width, const unsigned char *target, size_t k,
                      uint32_t *out);

/* ledger._speedups: the hot loop of ledger.verify, in C (SPEC.md section 5).
 *
 * One function, scan(), checks and folds a run of consecutive "plain" lines of a
 * buffer: the header shape, seq, the JSON syntax of data, UTF-8, the leaf and chain
 * hashes, and the Merkle compact-range fold. verify._scan_lines (Python) is the
 * reference and stays the only place that decides anything else.
 *
 * The contract that keeps the two in step: scan() may only ACCEPT a line that the
 * reference accepts, with exactly the same effect on the state (chain, seq, subtree
 * stack). It DECLINES, without consuming, any line it is not certain about: any
 * error at all, seq 0, the special kinds (session.opened, ledger.checkpoint,
 * session.sealed), a backslash in kind, a \u escape of a surrogate, nesting deeper
 * than MAX_DEPTH, whitespace after data, a line without its LF in the buffer.
 * The caller hands a declined line to the reference, which gives the verdict. So
 * declining is always safe, and being stricter than msgspec only costs speed.
 *
 * SHA-256 is built in (the x86 SHA extensions when the CPU has them, portable C
 * otherwise) so that nothing beyond a C compiler and the Python headers is needed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define LEDGER_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

/* ---- SHA-256 ------------------------------------------------------------------ */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static const uint32_t H256[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static inline uint32_t load_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static void compress_portable(uint32_t s[8], const uint8_t *p, size_t nblocks)
{
    uint32_t w[64];
    for (; nblocks; nblocks--, p += 64) {
        for (int t = 0; t < 16; t++)
            w[t] = load_be32(p + 4 * t);
        for (int t = 16; t < 64; t++) {
            uint32_t s0 = ROTR(w[t - 15], 7) ^ ROTR(w[t - 15], 18) ^ (w[t - 15] >> 3);
            uint32_t s1 = ROTR(w[t - 2], 17) ^ ROTR(w[t - 2], 19) ^ (w[t - 2] >> 10);
            w[t] = s1 + w[t - 7] + s0 + w[t - 16];
        }
        uint32_t a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
        for (int t = 0; t < 64; t++) {
            uint32_t t1 = h + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + K256[t] + w[t];
            uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        s[0] += a;
        s[1] += b;
        s[2] += c;
        s[3] += d;
        s[4] += e;
        s[5] += f;
        s[6] += g;
        s[7] += h;
    }
}

#ifdef LEDGER_X86
/* The SHA extensions keep the state as two registers, ABEF and CDGH, and do two
 * rounds per sha256rnds2. The message schedule for rounds 16..63 is computed four
 * words at a time, just before use: W[t..t+3] from msg1 (sigma0 terms), the W[t-7]
 * words and msg2 (sigma1 terms). */
#define SHANI __attribute__((target("sha,sse4.1,ssse3")))

SHANI static inline void shani_load(const uint32_t s[8], __m128i *abef, __m128i *cdgh)
{
    __m128i cdab = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&s[0]), 0xB1);
    __m128i efgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&s[4]), 0x1B);
    *abef = _mm_alignr_epi8(cdab, efgh, 8);
    *cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
}

SHANI static inline void shani_store(uint32_t s[8], __m128i abef, __m128i cdgh)
{
    __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)&s[0], _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)&s[4], _mm_alignr_epi8(dchg, feba, 8));
}

/* W[4g..4g+3] for g >= 4, from the four previous groups held in m[(g+k) & 3]. */
SHANI static inline __m128i shani_schedule(const __m128i m[4], int g)
{
    __m128i x = _mm_sha256msg1_epu32(m[g & 3], m[(g + 1) & 3]);
    x = _mm_add_epi32(x, _mm_alignr_epi8(m[(g + 3) & 3], m[(g + 2) & 3], 4));
    return _mm_sha256msg2_epu32(x, m[(g + 3) & 3]);
}

SHANI static void compress_shani(uint32_t s[8], const uint8_t *p, size_t nblocks)
{
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i abef, cdgh;
    shani_load(s, &abef, &cdgh);
    for (; nblocks; nblocks--, p += 64) {
        const __m128i abef0 = abef, cdgh0 = cdgh;
        __m128i m[4];
#pragma GCC unroll 16
        for (int g = 0; g < 16; g++) {
            __m128i w = g < 4 ? _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * g)), bswap)
                              : shani_schedule(m, g);
            m[g & 3] = w;
            __m128i k = _mm_add_epi32(w, _mm_loadu_si128((const __m128i *)&K256[4 * g]));
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, k);
            abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(k, 0x0E));
        }
        abef = _mm_add_epi32(abef, abef0);
        cdgh = _mm_add_epi32(cdgh, cdgh0);
    }
    shani_store(s, abef, cdgh);
}

/* One block each of two independent messages, their rounds interleaved: a round
 * waits for the one before it, so one message alone leaves the unit idle. */
SHANI static void compress2_shani(uint32_t sa[8], const uint8_t *pa, uint32_t sb[8], const uint8_t *pb)
{
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i abef_a, cdgh_a, abef_b, cdgh_b;
    shani_load(sa, &abef_a, &cdgh_a);
    shani_load(sb, &abef_b, &cdgh_b);
    const __m128i abef_a0 = abef_a, cdgh_a0 = cdgh_a, abef_b0 = abef_b, cdgh_b0 = cdgh_b;
    __m128i ma[4], mb[4];
#pragma GCC unroll 16
    for (int g = 0; g < 16; g++) {
        __m128i wa, wb;
        if (g < 4) {
            wa = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(pa + 16 * g)), bswap);
            wb = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(pb + 16 * g)), bswap);
        } else {
            wa = shani_schedule(ma, g);
            wb = shani_schedule(mb, g);
        }
        ma[g & 3] = wa;
        mb[g & 3] = wb;
        const __m128i kg = _mm_loadu_si128((const __m128i *)&K256[4 * g]);
        __m128i ka = _mm_add_epi32(wa, kg), kb = _mm_add_epi32(wb, kg);
        cdgh_a = _mm_sha256rnds2_epu32(cdgh_a, abef_a, ka);
        cdgh_b = _mm_sha256rnds2_epu32(cdgh_b, abef_b, kb);
        abef_a = _mm_sha256rnds2_epu32(abef_a, cdgh_a, _mm_shuffle_epi32(ka, 0x0E));
        abef_b = _mm_sha256rnds2_epu32(abef_b, cdgh_b, _mm_shuffle_epi32(kb, 0x0E));
    }
    shani_store(sa, _mm_add_epi32(abef_a, abef_a0), _mm_add_epi32(cdgh_a, cdgh_a0));
    shani_store(sb, _mm_add_epi32(abef_b, abef_b0), _mm_add_epi32(cdgh_b, cdgh_b0));
}

static int cpu_has_shani(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    if (!(c & (1u << 19)) || !(c & (1u << 9))) /* SSE4.1, SSSE3 */
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    return (b >> 29) & 1; /* SHA */
}
#endif

static void compress2_portable(uint32_t sa[8], const uint8_t *pa, uint32_t sb[8], const uint8_t *pb)
{
    compress_portable(sa, pa, 1);
    compress_portable(sb, pb, 1);
}

static void (*compress)(uint32_t s[8], const uint8_t *p, size_t nblocks) = compress_portable;
static void (*compress2)(uint32_t sa[8], const uint8_t *pa, uint32_t sb[8], const uint8_t *pb) = compress2_portable;

static inline void state_digest(const uint32_t h[8], uint8_t out[32])
{
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(h[i] >> 8);
        out[4 * i + 3] = (uint8_t)h[i];
    }
}

/* tail[0..r) holds a message's last bytes: append 0x80, zeros and the bit length of
 * the whole message (total bytes). Returns the blocks tail now fills: 1 or 2. */
static size_t pad_tail(uint8_t tail[128], size_t r, uint64_t total)
{
    const size_t nblocks = r + 1 + 8 <= 64 ? 1 : 2;
    const size_t end = 64 * nblocks;
    tail[r] = 0x80;
    memset(tail + r + 1, 0, end - 8 - (r + 1));
    for (int i = 0; i < 8; i++)
        tail[end - 8 + i] = (uint8_t)((total * 8) >> (56 - 8 * i));
    return nblocks;
}

/* SHA-256 of p[0..n): the whole blocks read in place, the rest padded in a copy. */
static void sha256(const uint8_t *p, size_t n, uint8_t out[32])
{
    uint32_t h[8];
    uint8_t tail[128];
    memcpy(h, H256, sizeof h);
    if (n >= 64)
        compress(h, p, n / 64);
    const size_t r = n % 64;
    memcpy(tail, p + (n - r), r);
    compress(h, tail, pad_tail(tail, r, n));
    state_digest(h, out);
}

/* ---- the three hashes of the format, as padded blocks ------------------------------ */

/* A leaf message 0x00 || E_i as blocks: the first block copied (it starts with the
 * prefix byte), the whole blocks after it read in place, the rest and the padding
 * copied into tail. */
typedef struct {
    const uint8_t *mid;
    size_t nhead, nmid, ntail;
    uint8_t head[64];
    uint8_t tail[128];
} leaf_msg;

static inline const uint8_t *leaf_block(const leaf_msg *m, size_t i)
{
    if (i < m->nhead)
        return m->head;
    i -= m->nhead;
    return i < m->nmid ? m->mid + 64 * i : m->tail + 64 * (i - m->nmid);
}

/* 0x00 || body || '}': E_i is the line up to its chain key, plus the closing brace. */
static void leaf_msg_init(leaf_msg *m, const uint8_t *body, size_t n)
{
    const uint64_t total = (uint64_t)n + 2;
    if (n < 63) {
        m->nhead = m->nmid = 0;
        m->mid = NULL;
        m->tail[0] = 0x00;
        memcpy(m->tail + 1, body, n);
        m->tail[n + 1] = '}';
        m->ntail = pad_tail(m->tail, n + 2, total);
        return;
    }
    m->head[0] = 0x00;
    memcpy(m->head + 1, body, 63);
    m->nhead = 1;
    body += 63;
    n -= 63;
    m->mid = body;
    m->nmid = n / 64;
    size_t r = n % 64;
    memcpy(m->tail, body + 64 * m->nmid, r);
    m->tail[r] = '}';
    m->ntail = pad_tail(m->tail, r + 1, total);
}

static void leaf_hash(const leaf_msg *m, uint8_t out[32])
{
    uint32_t h[8];
    memcpy(h, H256, sizeof h);
    if (m->nhead)
        compress(h, m->head, 1);
    if (m->nmid)
        compress(h, m->mid, m->nmid);
    compress(h, m->tail, m->ntail);
    state_digest(h, out);
}

/* Two leaves at once, block by block, then whichever message is longer alone. */
static void leaf_hash2(const leaf_msg *a, uint8_t out_a[32], const leaf_msg *b, uint8_t out_b[32])
{
    uint32_t ha[8], hb[8];
    memcpy(ha, H256, sizeof ha);
    memcpy(hb, H256, sizeof hb);
    const size_t na = a->nhead + a->nmid + a->ntail, nb = b->nhead + b->nmid + b->ntail;
    size_t i = 0;
    for (; i < na && i < nb; i++)
        compress2(ha, leaf_block(a, i), hb, leaf_block(b, i));
    for (; i < na; i++)
        compress(ha, leaf_block(a, i), 1);
    for (; i < nb; i++)
        compress(hb, leaf_block(b, i), 1);
    state_digest(ha, out_a);
    state_digest(hb, out_b);
}

/* The chain message C_(i-1) || L_i (64 bytes) and the node message 0x01 || l || r
 * (65 bytes) both fill exactly two blocks once padded. */
typedef struct {
    uint8_t b[128];
} two_blocks;

static void chain_msg(two_blocks *m, const uint8_t prev[32], const uint8_t leaf[32])
{
    memcpy(m->b, prev, 32);
    memcpy(m->b + 32, leaf, 32);
    memset(m->b + 64, 0, 64);
    m->b[64] = 0x80;
    m->b[126] = 0x02; /* 512 bits */
}

static void node_msg(two_blocks *m, const uint8_t left[32], const uint8_t right[32])
{
    m->b[0] = 0x01;
    memcpy(m->b + 1, left, 32);
    memcpy(m->b + 33, right, 32);
    memset(m->b + 65, 0, 63);
    m->b[65] = 0x80;
    m->b[126] = 0x02; /* 520 bits */
    m->b[127] = 0x08;
}

static void two_hash(const two_blocks *m, uint8_t out[32])
{
    uint32_t h[8];
    memcpy(h, H256, sizeof h);
    compress(h, m->b, 2);
    state_digest(h, out);
}

static void two_hash2(const two_blocks *a, uint8_t out_a[32], const two_blocks *b, uint8_t out_b[32])
{
    uint32_t ha[8], hb[8];
    memcpy(ha, H256, sizeof ha);
    memcpy(hb, H256, sizeof hb);
    compress2(ha, a->b, hb, b->b);
    compress2(ha, a->b + 64, hb, b->b + 64);
    state_digest(ha, out_a);
    state_digest(hb, out_b);
}

/* ---- UTF-8 and JSON syntax -------------------------------------------------------- */

/* The length of the strict UTF-8 sequence at p (as Python's decoder: no overlongs, no
 * surrogates, nothing past U+10FFFF), or 0 when there is none. */
static size_t utf8_seq(const uint8_t *p, const uint8_t *e)
{
    uint8_t c = *p;
    if (c < 0x80)
        return 1;
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if ((size_t)(e - p) <= need || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i <= need; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    return need + 1;
}

static int utf8_ok(const uint8_t *p, const uint8_t *e)
{
    while (p < e) {
        size_t k = utf8_seq(p, e);
        if (k == 0)
            return 0;
        p += k;
    }
    return 1;
}

#define MAX_DEPTH 128 /* format.MAX_DATA_DEPTH: deeper data is the reference's to reject */

/* Bytes that end a run of plain string characters: the quote, the backslash, controls,
 * and non-ASCII bytes (checked as UTF-8 where they stand: outside strings the grammar
 * admits ASCII only, so this and the kind check cover all of E_i). */
static uint8_t str_stop[256];

/* The first byte at or after p that str_stop flags, or e. */
static inline const uint8_t *skip_plain(const uint8_t *p, const uint8_t *e)
{
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), ctl = _mm_set1_epi8(0x1f);
    while (e - p >= 16) {
        const __m128i v = _mm_loadu_si128((const __m128i *)p);
        const __m128i stop = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                                          _mm_cmpeq_epi8(_mm_max_epu8(v, ctl), ctl)); /* v <= 0x1f */
        const unsigned mask = (unsigned)_mm_movemask_epi8(stop) | (unsigned)_mm_movemask_epi8(v); /* or >= 0x80 */
        if (mask)
            return p + __builtin_ctz(mask);
        p += 16;
    }
#endif
    while (p < e && !str_stop[*p])
        p++;
    return p;
}

static inline int is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

static inline const uint8_t *skip_ws(const uint8_t *p, const uint8_t *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

/* p just after the opening quote; returns just after the closing one, or NULL. */
static const uint8_t *json_string(const uint8_t *p, const uint8_t *e)
{
    for (;;) {
        p = skip_plain(p, e);
        if (p >= e)
            return NULL;
        if (*p == '"')
            return p + 1;
        if (*p >= 0x80) {
            size_t k = utf8_seq(p, e);
            if (k == 0)
                return NULL;
            p += k;
            continue;
        }
        if (*p != '\\')
            return NULL; /* a control character */
        if (e - p < 2)
            return NULL;
        switch (p[1]) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            p += 2;
            break;
        case 'u': {
            if (e - p < 6)
                return NULL;
            unsigned v = 0;
            for (int i = 2; i < 6; i++) {
                uint8_t h = p[i];
                v <<= 4;
                if (is_digit(h))
                    v |= h - '0';
                else if (h >= 'a' && h <= 'f')
                    v |= h - 'a' + 10;
                else if (h >= 'A' && h <= 'F')
                    v |= h - 'A' + 10;
                else
                    return NULL;
            }
            if (v >= 0xD800 && v <= 0xDFFF)
                return NULL; /* pairing rules: the reference decides */
            p += 6;
            break;
        }
        default:
            return NULL;
        }
    }
}

static const uint8_t *json_number(const uint8_t *p, const uint8_t *e)
{
    if (*p == '-')
        p++;
    if (p >= e)
        return NULL;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (p < e && is_digit(*p))
            p++;
    else
        return NULL;
    if (p < e && *p == '.') {
        p++;
        if (p >= e || !is_digit(*p))
            return NULL;
        while (p < e && is_digit(*p))
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        if (p >= e || !is_digit(*p))
            return NULL;
        while (p < e && is_digit(*p))
            p++;
    }
    return p;
}

static const uint8_t *json_value(const uint8_t *p, const uint8_t *e, int depth);

static const uint8_t *json_container(const uint8_t *p, const uint8_t *e, int depth)
{
    const uint8_t close = *p == '{' ? '}' : ']';
    const int object = close == '}';
    if (depth >= MAX_DEPTH)
        return NULL;
    p = skip_ws(p + 1, e);
    if (p < e && *p == close)
        return p + 1;
    for (;;) {
        if (object) {
            if (p >= e || *p != '"')
                return NULL;
            p = json_string(p + 1, e);
            if (p == NULL)
                return NULL;
            p = skip_ws(p, e);
            if (p >= e || *p != ':')
                return NULL;
            p = skip_ws(p + 1, e);
        }
        p = json_value(p, e, depth + 1);
        if (p == NULL)
            return NULL;
        p = skip_ws(p, e);
        if (p >= e)
            return NULL;
        if (*p == close)
            return p + 1;
        if (*p != ',')
            return NULL;
        p = skip_ws(p + 1, e);
    }
}

static const uint8_t *json_value(const uint8_t *p, const uint8_t *e, int depth)
{
    if (p >= e)
        return NULL;
    switch (*p) {
    case '{':
    case '[':
        return json_container(p, e, depth);
    case '"':
        return json_string(p + 1, e);
    case 't':
        return e - p >= 4 && memcmp(p, "true", 4) == 0 ? p + 4 : NULL;
    case 'f':
        return e - p >= 5 && memcmp(p, "false", 5) == 0 ? p + 5 : NULL;
    case 'n':
        return e - p >= 4 && memcmp(p, "null", 4) == 0 ? p + 4 : NULL;
    default:
        if (*p == '-' || is_digit(*p))
            return json_number(p, e);
        return NULL;
    }
}

/* ---- one line --------------------------------------------------------------------- */

#define TRAILER 76 /* ,"chain":"<64 hex>"} */
#define STACK_MAX 128

typedef struct {
    uint8_t prev[32];     /* C_(seq-1) */
    long long index;      /* the seq the next line must have */
    long long begin;      /* leaf index of the chunk's first line */
    uint8_t stack[STACK_MAX][32];
    int depth;
    Py_ssize_t max_line;
} scan_state;

static const char HEX[] = "0123456789abcdef";

static int is_special_kind(const uint8_t *k, size_t n)
{
    return (n == 14 && memcmp(k, "session.opened", 14) == 0) ||
           (n == 17 && memcmp(k, "ledger.checkpoint", 17) == 0) ||
           (n == 14 && memcmp(k, "session.sealed", 14) == 0);
}

typedef struct {
    long long seq;
    const uint8_t *body_end; /* E_i is [line, body_end) followed by '}' */
    const uint8_t *stored;   /* the 64 hex digits of the stored chain value */
} line_info;

/* Everything about line [p, p+n) (without its LF) that needs no hash: 1 when the
 * helper may take it as line ``want_seq``, 0 when it leaves it to the reference. */
static int check_line(const scan_state *st, long long want_seq, const uint8_t *p, Py_ssize_t n, line_info *li)
{
    static const char digits_ts[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    if (n > st->max_line || n < TRAILER + 64)
        return 0;
    const uint8_t *e = p + n;
    const uint8_t *body_end = e - TRAILER;
    if (memcmp(body_end, ",\"chain\":\"", 10) != 0 || e[-2] != '"' || e[-1] != '}')
        return 0;

    /* Header, byte for byte as verify._HEADER. */
    const uint8_t *q = p;
    if (memcmp(q, "{\"v\":1,\"seq\":", 13) != 0)
        return 0;
    q += 13;
    if (*q < '1' || *q > '9')
        return 0; /* seq 0 is session.opened (special); anything else is an error */
    long long seq = 0;
    int nd = 0;
    while (q < body_end && is_digit(*q) && nd < 18) {
        seq = seq * 10 + (*q - '0');
        q++;
        nd++;
    }
    if (seq != want_seq || body_end - q < 7 + 27 + 10 || memcmp(q, ",\"ts\":\"", 7) != 0)
        return 0;
    q += 7;
    for (int i = 0; i < 27; i++) {
        char want = digits_ts[i];
        if (want == 'd' ? !is_digit(q[i]) : q[i] != (uint8_t)want)
            return 0;
    }
    q += 27;
    if (memcmp(q, "\",\"kind\":\"", 10) != 0)
        return 0;
    q += 10;
    const uint8_t *kind = q;
    while (q < body_end && *q != '"') {
        if (*q == '\\' || *q < 0x20)
            return 0;
        size_t k = utf8_seq(q, body_end);
        if (k == 0)
            return 0;
        q += k;
    }
    if (q == kind || body_end - q < 9 + 2 || memcmp(q, "\",\"data\":{", 10) != 0)
        return 0;
    if (is_special_kind(kind, (size_t)(q - kind)))
        return 0;
    const uint8_t *data = q + 9;

    /* data: exactly one JSON object, nothing after it (its strings UTF-8 checked). */
    if (json_value(data, body_end, 0) != body_end)
        return 0;
    li->seq = seq;
    li->body_end = body_end;
    li->stored = e - 66;
    return 1;
}

static int hex_equal(const uint8_t *hex, const uint8_t v[32])
{
    for (int i = 0; i < 32; i++)
        if (hex[2 * i] != (uint8_t)HEX[v[i] >> 4] || hex[2 * i + 1] != (uint8_t)HEX[v[i] & 15])
            return 0;
    return 1;
}

/* Given a checked line's leaf: its chain value (with the first Merkle merge alongside),
 * the compare with the stored value, the rest of the fold. 1 when the line is taken
 * and st advanced; 0 with st untouched. */
static int finish_line(scan_state *st, const line_info *li, const uint8_t leaf[32])
{
    /* The leaf merges with each left sibling that lies inside the chunk. */
    int k = 0;
    for (long long j = li->seq, lv = 0; (j & 1) && ((j - 1) << lv) >= st->begin; j >>= 1, lv++)
        k++;
    if (k > st->depth || st->depth - k >= STACK_MAX - 1)
        return 0;
    two_blocks cm, nm;
    uint8_t chain[32], h[32];
    chain_msg(&cm, st->prev, leaf);
    if (k) {
        node_msg(&nm, st->stack[st->depth - 1], leaf);
        two_hash2(&cm, chain, &nm, h);
    } else {
        two_hash(&cm, chain);
        memcpy(h, leaf, 32);
    }
    if (!hex_equal(li->stored, chain))
        return 0;
    for (int i = 1; i < k; i++) {
        node_msg(&nm, st->stack[st->depth - 1 - i], h);
        two_hash(&nm, h);
    }
    st->depth -= k;
    memcpy(st->stack[st->depth++], h, 32);
    memcpy(st->prev, chain, 32);
    st->index++;
    return 1;
}

/* Take lines from buf[*pos:end), two at a time where both check (their leaves hashed
 * together); stop at the first line not taken. Returns the number taken. */
static Py_ssize_t scan_lines(scan_state *st, const uint8_t *base, Py_ssize_t *pos, Py_ssize_t end)
{
    Py_ssize_t count = 0;
    leaf_msg ma, mb;
    uint8_t leaf_a[32], leaf_b[32];
    line_info la, lb;
    while (*pos < end) {
        const uint8_t *a = base + *pos;
        const uint8_t *lf_a = memchr(a, '\n', (size_t)(end - *pos));
        if (lf_a == NULL || !check_line(st, st->index, a, lf_a - a, &la))
            break;
        const uint8_t *b = lf_a + 1;
        const uint8_t *lf_b = b < base + end ? memchr(b, '\n', (size_t)(base + end - b)) : NULL;
        leaf_msg_init(&ma, a, (size_t)(la.body_end - a));
        if (lf_b == NULL || !check_line(st, st->index + 1, b, lf_b - b, &lb)) {
            leaf_hash(&ma, leaf_a);
            if (finish_line(st, &la, leaf_a)) {
                *pos = b - base;
                count++;
            }
            break; /* the next line is not the helper's */
        }
        leaf_msg_init(&mb, b, (size_t)(lb.body_end - b));
        leaf_hash2(&ma, leaf_a, &mb, leaf_b);
        if (!finish_line(st, &la, leaf_a))
            break;
        *pos = b - base;
        count++;
        if (!finish_line(st, &lb, leaf_b))
            break;
        *pos = lf_b + 1 - base;
        count++;
    }
    return count;
}

/* ---- the Python entry points ------------------------------------------------------ */

PyDoc_STRVAR(scan_doc,
             "scan(buf, pos, end, prev, index, begin, stack, max_line) -> (pos, count, chain)\n\n"
             "Check and fold the plain lines of buf[pos:end], as verify._scan_lines would.\n"
             "prev is C_(index-1); stack (a list of 32-byte subtree hashes, updated in place)\n"
             "is the compact range of the chunk begun at leaf ``begin``. Stops at the first\n"
             "line it does not accept, or that has no LF in buf: pos is that line's start,\n"
             "count the lines accepted, chain the last accepted line's chain value.");

static PyObject *scan(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t pos, end, prev_len, max_line;
    const char *prev;
    long long index, begin;
    PyObject *stack;
    if (!PyArg_ParseTuple(args, "y*nny#LLO!n", &buf, &pos, &end, &prev, &prev_len, &index, &begin, &PyList_Type, &stack,
                          &max_line))
        return NULL;
    PyObject *result = NULL;
    scan_state *st = PyMem_Malloc(sizeof *st);
    if (st == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t depth = PyList_GET_SIZE(stack);
    if (prev_len != 32 || index < 1 || begin < 0 || pos < 0 || end < pos || end > buf.len || depth >= STACK_MAX - 1) {
        PyErr_SetString(PyExc_ValueError, "scan: bad state");
        goto done;
    }
    memcpy(st->prev, prev, 32);
    st->index = index;
    st->begin = begin;
    st->depth = (int)depth;
    st->max_line = max_line;
    for (Py_ssize_t i = 0; i < depth; i++) {
        PyObject *item = PyList_GET_ITEM(stack, i);
        if (!PyBytes_Check(item) || PyBytes_GET_SIZE(item) != 32) {
            PyErr_SetString(PyExc_ValueError, "scan: stack items must be 32 bytes");
            goto done;
        }
        memcpy(st->stack[i], PyBytes_AS_STRING(item), 32);
    }

    const uint8_t *base = buf.buf;
    Py_ssize_t count = 0;
    Py_BEGIN_ALLOW_THREADS
    count = scan_lines(st, base, &pos, end);
    Py_END_ALLOW_THREADS

    if (count) {
        /* Write the stack back: the list's items are replaced by the C stack. */
        PyObject *items = PyList_New(st->depth);
        if (items == NULL)
            goto done;
        for (int i = 0; i < st->depth; i++) {
            PyObject *b = PyBytes_FromStringAndSize((const char *)st->stack[i], 32);
            if (b == NULL) {
                Py_DECREF(items);
                goto done;
            }
            PyList_SET_ITEM(items, i, b);
        }
        int rc = PyList_SetSlice(stack, 0, PyList_GET_SIZE(stack), items);
        Py_DECREF(items);
        if (rc < 0)
            goto done;
    }
    result = Py_BuildValue("nny#", pos, count, (const char *)st->prev, (Py_ssize_t)32);
done:
    PyMem_Free(st);
    PyBuffer_Release(&buf);
    return result;
}

PyDoc_STRVAR(sha256_doc, "sha256(data) -> bytes\n\nThe built-in SHA-256 (for tests against hashlib).");

static PyObject *py_sha256(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "y*", &buf))
        return NULL;
    uint8_t out[32];
    sha256(buf.buf, (size_t)buf.len, out);
    PyBuffer_Release(&buf);
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

PyDoc_STRVAR(json_object_ok_doc,
             "json_object_ok(data) -> bool\n\nTrue when data is exactly one JSON object that scan() would accept.");

static PyObject *py_json_object_ok(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "y*", &buf))
        return NULL;
    const uint8_t *p = buf.buf, *e = p + buf.len;
    int ok = buf.len > 0 && *p == '{' && json_value(p, e, 0) == e;
    PyBuffer_Release(&buf);
    return PyBool_FromLong(ok);
}

PyDoc_STRVAR(utf8_ok_doc, "utf8_ok(data) -> bool\n\nTrue when data is strict UTF-8.");

static PyObject *py_utf8_ok(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "y*", &buf))
        return NULL;
    const uint8_t *p = buf.buf;
    int ok = utf8_ok(p, p + buf.len);
    PyBuffer_Release(&buf);
    return PyBool_FromLong(ok);
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, scan_doc},
    {"sha256", py_sha256, METH_VARARGS, sha256_doc},
    {"json_object_ok", py_json_object_ok, METH_VARARGS, json_object_ok_doc},
    {"utf8_ok", py_utf8_ok, METH_VARARGS, utf8_ok_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ledger._speedups",
    .m_doc = "The verify hot loop in C (see verify._scan_lines).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__speedups(void)
{
    for (int c = 0; c < 0x20; c++)
        str_stop[c] = 1;
    for (int c = 0x80; c < 0x100; c++)
        str_stop[c] = 1;
    str_stop['"'] = 1;
    str_stop['\\'] = 1;
    const char *impl = "portable";
#ifdef LEDGER_X86
    /* LEDGER_PORTABLE_SHA256=1 keeps the portable code even where the CPU has the SHA
     * extensions, so that tests on such a machine check it too. */
    const char *portable = getenv("LEDGER_PORTABLE_SHA256");
    if (cpu_has_shani() && !(portable && *portable && strcmp(portable, "0") != 0)) {
        compress = compress_shani;
        compress2 = compress2_shani;
        impl = "sha-ni";
    }
#endif
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddStringConstant(m, "SHA256_IMPL", impl) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

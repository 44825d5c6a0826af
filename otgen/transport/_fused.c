/* Fused scoring of points against targets: s_ij = <x_i, y_j> + h_j, reduced on the fly.
 *
 * For every row x_i of X (M, d) the kernel returns the best target (mode 1) or the two
 * best targets (mode 2: values and indices, descending) without ever writing the M x N
 * score matrix: at d = 16..64 a GEMM is bound by storing its output, this kernel only by
 * its FMAs.
 *
 * Layout. The targets come packed in panels of TILE_T targets, d-major: panel p holds
 * y_{p*TILE_T + t}[k] at panels[(p*d + k)*TILE_T + t]; hpad holds the heights, padded with
 * -inf to a whole number of panels (padded targets, zero vectors at height -inf, never win).
 *
 * Inner tile. TILE_P points x TILE_T targets: 2*TILE_P AVX accumulators start at the heights
 * and take d FMAs each (a broadcast coordinate of x times 8 packed target coordinates).
 * Each point keeps, per lane of 8 targets, its running best (and second best) value and
 * index; the lanes are merged once per point at the end. Targets are walked in chunks that
 * stay in L2, points in blocks of POINT_BLOCK taken by the threads from a shared counter
 * (pthreads, started per call: no second OpenMP runtime beside torch's, nothing left after fork).
 *
 * Ties: a lane keeps its first maximal index (strict comparison); the lane merge prefers the
 * smaller index among equal values, so the best index is the first maximal one.
 * Rounding: each score is h_j followed by d fused multiply-adds in the order k = 0..d-1.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <pthread.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define OTGEN_X86 1
#else
#define OTGEN_X86 0
#endif

/* version of the calling convention below; the loader refuses a library with another */
#define OTGEN_FUSED_ABI 1
/* targets per tile: two 8-float AVX registers per point */
#define TILE_T 16
/* points per tile: 2*TILE_P accumulators + 2 target vectors + 1 broadcast fit the 16 registers */
#define TILE_P 4
/* points per work item of a thread: its lane state (4 x 32 B per point) stays in L1/L2 */
#define POINT_BLOCK 128
/* bytes of packed targets walked per pass over a point block: stays in a core's L2 */
#define CHUNK_BYTES (128 * 1024)
_Static_assert(POINT_BLOCK % TILE_P == 0, "a point block holds whole tiles");

int otgen_fused_abi(void) { return OTGEN_FUSED_ABI; }

int otgen_fused_cpu_ok(void)
{
#if OTGEN_X86 && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

#if OTGEN_X86

/* Lane state of one point block: best value/index and second value/index, 8 lanes per point. */
typedef struct {
    float *bv, *sv;
    int32_t *bi, *si;
} lane_state;

/* Scores of the TILE_P points of one tile against the TILE_T targets of panel p:
 * a0[t], a1[t] = h + <x_t, y> for targets p*TILE_T + 0..7 and + 8..15 (h first, then d FMAs). */
__attribute__((always_inline, target("avx2,fma")))
static inline void panel_scores(const float *x, int d, const float *panels, const float *hpad, int64_t p,
                                __m256 *a0, __m256 *a1)
{
    const float *Y = panels + p * (int64_t)d * TILE_T;
    const __m256 h0 = _mm256_loadu_ps(hpad + p * TILE_T), h1 = _mm256_loadu_ps(hpad + p * TILE_T + 8);
#pragma GCC unroll 8
    for (int t = 0; t < TILE_P; t++) { a0[t] = h0; a1[t] = h1; }
    const float *xk = x;
    for (const float *Yk = Y, *Yend = Y + (int64_t)d * TILE_T; Yk < Yend; Yk += TILE_T, xk += TILE_P) {
        const __m256 y0 = _mm256_loadu_ps(Yk), y1 = _mm256_loadu_ps(Yk + 8);
#pragma GCC unroll 8
        for (int t = 0; t < TILE_P; t++) {
            const __m256 xb = _mm256_broadcast_ss(xk + t);
            a0[t] = _mm256_fmadd_ps(xb, y0, a0[t]);
            a1[t] = _mm256_fmadd_ps(xb, y1, a1[t]);
        }
    }
}

/* One tile of TILE_P points (x: the tile's coordinates interleaved, x[k*TILE_P + t]) over panels [p0, p1): best only. */
__attribute__((target("avx2,fma")))
static void tile_best(const float *x, int d, const float *panels, const float *hpad,
                      int64_t p0, int64_t p1, float *bv, int32_t *bi)
{
    __m256 best[TILE_P];
    __m256i idx[TILE_P];
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i eight = _mm256_set1_epi32(8);
#pragma GCC unroll 8
    for (int t = 0; t < TILE_P; t++) {
        best[t] = _mm256_loadu_ps(bv + 8 * t);
        idx[t] = _mm256_loadu_si256((const __m256i *)(bi + 8 * t));
    }
    for (int64_t p = p0; p < p1; p++) {
        __m256 a0[TILE_P], a1[TILE_P];
        panel_scores(x, d, panels, hpad, p, a0, a1);
        const __m256i j0 = _mm256_add_epi32(_mm256_set1_epi32((int32_t)(p * TILE_T)), lane);
        const __m256i j1 = _mm256_add_epi32(j0, eight);
#pragma GCC unroll 8
        for (int t = 0; t < TILE_P; t++) {
            __m256 m = _mm256_cmp_ps(a0[t], best[t], _CMP_GT_OQ);
            best[t] = _mm256_blendv_ps(best[t], a0[t], m);
            idx[t] = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(idx[t]), _mm256_castsi256_ps(j0), m));
            m = _mm256_cmp_ps(a1[t], best[t], _CMP_GT_OQ);
            best[t] = _mm256_blendv_ps(best[t], a1[t], m);
            idx[t] = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(idx[t]), _mm256_castsi256_ps(j1), m));
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < TILE_P; t++) {
        _mm256_storeu_ps(bv + 8 * t, best[t]);
        _mm256_storeu_si256((__m256i *)(bi + 8 * t), idx[t]);
    }
}

/* Lane-wise top-2 update with the scores a of targets j. */
#define TOP2_UPDATE(a, j, t)                                                                        \
    do {                                                                                            \
        const __m256 m1 = _mm256_cmp_ps((a), best[t], _CMP_GT_OQ);                                  \
        const __m256 m2 = _mm256_cmp_ps((a), sec[t], _CMP_GT_OQ);                                   \
        sec[t] = _mm256_blendv_ps(_mm256_blendv_ps(sec[t], (a), m2), best[t], m1);                  \
        sidx[t] = _mm256_blendv_ps(_mm256_blendv_ps(sidx[t], (j), m2), bidx[t], m1);                \
        best[t] = _mm256_blendv_ps(best[t], (a), m1);                                               \
        bidx[t] = _mm256_blendv_ps(bidx[t], (j), m1);                                               \
    } while (0)

/* One tile of TILE_P points over panels [p0, p1): best and second best, with indices.
 * Indices travel as the bit patterns of int32 in float registers (blends only, no arithmetic). */
__attribute__((target("avx2,fma")))
static void tile_top2(const float *x, int d, const float *panels, const float *hpad,
                      int64_t p0, int64_t p1, float *bv, int32_t *bi, float *sv, int32_t *si)
{
    __m256 best[TILE_P], sec[TILE_P], bidx[TILE_P], sidx[TILE_P];
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i eight = _mm256_set1_epi32(8);
#pragma GCC unroll 8
    for (int t = 0; t < TILE_P; t++) {
        best[t] = _mm256_loadu_ps(bv + 8 * t);
        sec[t] = _mm256_loadu_ps(sv + 8 * t);
        bidx[t] = _mm256_loadu_ps((const float *)(bi + 8 * t));
        sidx[t] = _mm256_loadu_ps((const float *)(si + 8 * t));
    }
    for (int64_t p = p0; p < p1; p++) {
        __m256 a0[TILE_P], a1[TILE_P];
        panel_scores(x, d, panels, hpad, p, a0, a1);
        const __m256i j0i = _mm256_add_epi32(_mm256_set1_epi32((int32_t)(p * TILE_T)), lane);
        const __m256 j0 = _mm256_castsi256_ps(j0i);
        const __m256 j1 = _mm256_castsi256_ps(_mm256_add_epi32(j0i, eight));
#pragma GCC unroll 8
        for (int t = 0; t < TILE_P; t++) {
            TOP2_UPDATE(a0[t], j0, t);
            TOP2_UPDATE(a1[t], j1, t);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < TILE_P; t++) {
        _mm256_storeu_ps(bv + 8 * t, best[t]);
        _mm256_storeu_ps(sv + 8 * t, sec[t]);
        _mm256_storeu_ps((float *)(bi + 8 * t), bidx[t]);
        _mm256_storeu_ps((float *)(si + 8 * t), sidx[t]);
    }
}

/* (v, i) ranks above (w, j): larger value, or equal value and smaller index. */
static int ranks_above(float v, int32_t i, float w, int32_t j) { return v > w || (v == w && i < j); }

/* Rows [r0, r1) of X: all panels, chunk by chunk, then the lane merge into the outputs. */
static void run_block(int mode, const float *X, int64_t r0, int64_t r1, int d, const float *panels,
                      const float *hpad, int64_t npanels, int64_t chunk, float *out_v, int64_t *out_i)
{
    float bv[POINT_BLOCK * 8], sv[POINT_BLOCK * 8];
    int32_t bi[POINT_BLOCK * 8], si[POINT_BLOCK * 8];
    const int64_t rows = r1 - r0;
    /* the block's points, tile by tile, interleaved (xp[(q*d + k)*TILE_P + t]) and zero-padded,
     * so the inner loop reads one stream of coordinates */
    const int64_t ntiles = (rows + TILE_P - 1) / TILE_P;
    float *xp = (float *)calloc((size_t)(ntiles * TILE_P * d), sizeof(float));
    if (xp == NULL) abort();
    for (int64_t r = 0; r < rows; r++)
        for (int k = 0; k < d; k++)
            xp[((r / TILE_P) * d + k) * TILE_P + r % TILE_P] = X[(r0 + r) * d + k];
    for (int64_t q = 0; q < ntiles * TILE_P * 8; q++) { bv[q] = sv[q] = -INFINITY; bi[q] = si[q] = 0; }
    for (int64_t c0 = 0; c0 < npanels; c0 += chunk) {
        const int64_t c1 = c0 + chunk < npanels ? c0 + chunk : npanels;
        for (int64_t t0 = 0; t0 < rows; t0 += TILE_P) {
            const float *x = xp + t0 * d;
            if (mode == 1)
                tile_best(x, d, panels, hpad, c0, c1, bv + 8 * t0, bi + 8 * t0);
            else
                tile_top2(x, d, panels, hpad, c0, c1, bv + 8 * t0, bi + 8 * t0, sv + 8 * t0, si + 8 * t0);
        }
    }
    free(xp);
    for (int64_t r = 0; r < rows; r++) {
        const float *v = bv + 8 * r, *w = sv + 8 * r;
        const int32_t *i = bi + 8 * r, *j = si + 8 * r;
        int b = 0;
        for (int l = 1; l < 8; l++)
            if (ranks_above(v[l], i[l], v[b], i[b])) b = l;
        if (mode == 1) {
            out_v[r0 + r] = v[b];
            out_i[r0 + r] = i[b];
            continue;
        }
        /* runner-up: the winning lane's second, or another lane's best */
        float v2 = w[b];
        int32_t i2 = j[b];
        for (int l = 0; l < 8; l++)
            if (l != b && ranks_above(v[l], i[l], v2, i2)) { v2 = v[l]; i2 = i[l]; }
        out_v[2 * (r0 + r)] = v[b];
        out_i[2 * (r0 + r)] = i[b];
        out_v[2 * (r0 + r) + 1] = v2;
        out_i[2 * (r0 + r) + 1] = i2;
    }
}

#endif /* OTGEN_X86 */

#if OTGEN_X86
/* Arguments shared by the threads of one call; blocks are dealt by an atomic counter. */
typedef struct {
    int mode, d;
    const float *X, *panels, *hpad;
    int64_t M, npanels, chunk, nblocks, next;
    float *out_v;
    int64_t *out_i;
} job;

static void *worker(void *arg)
{
    job *J = (job *)arg;
    for (;;) {
        const int64_t b = __atomic_fetch_add(&J->next, 1, __ATOMIC_RELAXED);
        if (b >= J->nblocks) return NULL;
        const int64_t r0 = b * POINT_BLOCK, r1 = r0 + POINT_BLOCK < J->M ? r0 + POINT_BLOCK : J->M;
        run_block(J->mode, J->X, r0, r1, J->d, J->panels, J->hpad, J->npanels, J->chunk, J->out_v, J->out_i);
    }
}
#endif

/* threads of one call at most (more are clamped) */
#define MAX_THREADS 256

/* Best (mode 1: out_v, out_i of shape (M,)) or two best (mode 2: shape (M, 2), descending)
 * scores of the M rows of X (row-major, M x d) against the packed targets, on nthreads
 * threads (the caller's and nthreads - 1 started here). Returns 0 on success, -1 for bad
 * arguments or a CPU without AVX2/FMA. */
int otgen_fused_score(int mode, const float *X, int64_t M, int d, const float *panels, const float *hpad,
                      int64_t npanels, int nthreads, float *out_v, int64_t *out_i)
{
#if OTGEN_X86
    if ((mode != 1 && mode != 2) || d < 1 || M < 0 || npanels < 1 || npanels * TILE_T >= INT32_MAX
        || !otgen_fused_cpu_ok())
        return -1;
    job J = {mode, d, X, panels, hpad, M, npanels, 0, (M + POINT_BLOCK - 1) / POINT_BLOCK, 0, out_v, out_i};
    J.chunk = CHUNK_BYTES / ((int64_t)d * TILE_T * (int64_t)sizeof(float));
    if (J.chunk < 1) J.chunk = 1;
    if (nthreads > J.nblocks) nthreads = (int)J.nblocks;
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    pthread_t tid[MAX_THREADS];
    int started = 0;
    for (int t = 1; t < nthreads; t++)          /* a thread that fails to start leaves its blocks to the others */
        if (pthread_create(&tid[started], NULL, worker, &J) == 0) started++;
    worker(&J);
    for (int t = 0; t < started; t++) pthread_join(tid[t], NULL);
    return 0;
#else
    (void)mode; (void)X; (void)M; (void)d; (void)panels; (void)hpad; (void)npanels; (void)nthreads;
    (void)out_v; (void)out_i;
    return -1;
#endif
}

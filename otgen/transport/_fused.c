/* Fused scoring of points against targets: s_ij = <x_i, y_j> + h_j, reduced on the fly.
 *
 * For every row x_i of X (M, d) the kernel returns the k best targets (1 <= k <= TOPK_MAX:
 * values and indices, descending) without ever writing the M x N score matrix: at
 * d = 16..64 a GEMM is bound by storing its output, this kernel only by its FMAs.
 *
 * Layout. The targets come packed in panels of TILE_T targets, d-major: panel p holds
 * y_{p*TILE_T + t}[k] at panels[(p*d + k)*TILE_T + t]; hpad holds the heights, padded with
 * -inf to a whole number of panels (padded targets, zero vectors at height -inf, never win).
 *
 * Inner tile. TILE_P points x TILE_T targets: 2*TILE_P AVX accumulators start at the heights
 * and take d FMAs each (a broadcast coordinate of x times 8 packed target coordinates).
 * Each point keeps its k best in a short sorted list; a panel's 16 scores are compared with
 * the list's k-th value at once (two compares and a movemask). After the first panels almost
 * no score beats it (about k ln(N / k) insertions per point in all), so the list costs no
 * more than a running maximum. It replaced per-lane best / second-best registers, whose six
 * blends per vector were the top-2's cost: top-2 over the bare GEMM went from 0.73 / 0.82 / 0.79
 * to 0.58 / 0.73 / 0.67 at 10000x16 / 20000x32 / 5000x16 (benchmarks/bench_fused_scoring.py,
 * results/fused_scoring.md before and after this version), best from 0.56 / 0.71 / 0.63 to
 * 0.62 / 0.68 / 0.69 (within the runs' noise).
 * Targets are walked in chunks that stay in L2, points in blocks of POINT_BLOCK taken by
 * the threads from a shared counter (pthreads, started per call: no second OpenMP runtime
 * beside torch's, nothing left after fork).
 *
 * Ties: each point sees its targets in increasing index order; the list admits only a score
 * strictly above its k-th and inserts it after the equal ones, so among equal values the
 * smaller indices are kept and come first (the best index is the first maximal one).
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
#define OTGEN_FUSED_ABI 2
/* targets per tile: two 8-float AVX registers per point */
#define TILE_T 16
/* points per tile: 2*TILE_P accumulators + 2 target vectors + 1 broadcast fit the 16 registers */
#define TILE_P 4
/* points per work item of a thread: their k-lists (8 B per entry) and coordinates stay in L1/L2 */
#define POINT_BLOCK 128
/* bytes of packed targets walked per pass over a point block: stays in a core's L2 */
#define CHUNK_BYTES (128 * 1024)
/* largest k: the solver's line search keeps 6 */
#define TOPK_MAX 16
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

/* Insert (v, j) into the descending list (vals, idx) of k entries, after the entries >= v;
 * the caller has checked v > vals[k - 1]. */
static inline void list_insert(float *vals, int32_t *idx, int k, float v, int32_t j)
{
    int q = k - 1;
    while (q > 0 && vals[q - 1] < v) { vals[q] = vals[q - 1]; idx[q] = idx[q - 1]; q--; }
    vals[q] = v;
    idx[q] = j;
}

/* One tile of TILE_P points over panels [p0, p1): each point's k best in a sorted list
 * (kv, ki: k entries per point). A panel's 16 scores are compared with the point's k-th
 * value at once; only the few that beat it are inserted, in increasing target order. */
__attribute__((target("avx2,fma")))
static void tile_topk(const float *x, int d, const float *panels, const float *hpad,
                      int64_t p0, int64_t p1, int k, float *kv, int32_t *ki)
{
    float s[TILE_T];
    for (int64_t p = p0; p < p1; p++) {
        __m256 a0[TILE_P], a1[TILE_P];
        panel_scores(x, d, panels, hpad, p, a0, a1);
#pragma GCC unroll 8
        for (int t = 0; t < TILE_P; t++) {
            float *v = kv + t * k;
            int32_t *j = ki + t * k;
            const __m256 kth = _mm256_broadcast_ss(v + k - 1);
            unsigned hit = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(a0[t], kth, _CMP_GT_OQ))
                         | (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(a1[t], kth, _CMP_GT_OQ)) << 8;
            if (!hit) continue;
            _mm256_storeu_ps(s, a0[t]);
            _mm256_storeu_ps(s + 8, a1[t]);
            for (; hit; hit &= hit - 1) {
                const int b = __builtin_ctz(hit);
                if (s[b] > v[k - 1]) list_insert(v, j, k, s[b], (int32_t)(p * TILE_T + b));
            }
        }
    }
}

/* Rows [r0, r1) of X: each row's k best over all panels, chunk by chunk, into the outputs. */
static void run_block(int k, const float *X, int64_t r0, int64_t r1, int d, const float *panels,
                      const float *hpad, int64_t npanels, int64_t chunk, float *out_v, int64_t *out_i)
{
    float kv[POINT_BLOCK * TOPK_MAX];
    int32_t ki[POINT_BLOCK * TOPK_MAX];
    const int64_t rows = r1 - r0;
    /* the block's points, tile by tile, interleaved (xp[(q*d + k)*TILE_P + t]) and zero-padded,
     * so the inner loop reads one stream of coordinates */
    const int64_t ntiles = (rows + TILE_P - 1) / TILE_P;
    float *xp = (float *)calloc((size_t)(ntiles * TILE_P * d), sizeof(float));
    if (xp == NULL) abort();
    for (int64_t r = 0; r < rows; r++)
        for (int c = 0; c < d; c++)
            xp[((r / TILE_P) * d + c) * TILE_P + r % TILE_P] = X[(r0 + r) * d + c];
    for (int64_t q = 0; q < ntiles * TILE_P * k; q++) { kv[q] = -INFINITY; ki[q] = 0; }
    for (int64_t c0 = 0; c0 < npanels; c0 += chunk) {
        const int64_t c1 = c0 + chunk < npanels ? c0 + chunk : npanels;
        for (int64_t t0 = 0; t0 < rows; t0 += TILE_P)
            tile_topk(xp + t0 * d, d, panels, hpad, c0, c1, k, kv + t0 * k, ki + t0 * k);
    }
    free(xp);
    for (int64_t q = 0; q < rows * k; q++) {
        out_v[r0 * k + q] = kv[q];
        out_i[r0 * k + q] = ki[q];
    }
}

#endif /* OTGEN_X86 */

#if OTGEN_X86
/* Arguments shared by the threads of one call; blocks are dealt by an atomic counter. */
typedef struct {
    int k, d;
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
        run_block(J->k, J->X, r0, r1, J->d, J->panels, J->hpad, J->npanels, J->chunk, J->out_v, J->out_i);
    }
}
#endif

/* threads of one call at most (more are clamped) */
#define MAX_THREADS 256

/* The k best scores (out_v, out_i of shape (M, k), descending; 1 <= k <= TOPK_MAX) of the
 * M rows of X (row-major, M x d) against the packed targets, on nthreads threads (the
 * caller's and nthreads - 1 started here). Returns 0 on success, -1 for bad arguments or a
 * CPU without AVX2/FMA. */
int otgen_fused_score(int k, const float *X, int64_t M, int d, const float *panels, const float *hpad,
                      int64_t npanels, int nthreads, float *out_v, int64_t *out_i)
{
#if OTGEN_X86
    if (k < 1 || k > TOPK_MAX || d < 1 || M < 0 || npanels < 1 || npanels * TILE_T >= INT32_MAX
        || !otgen_fused_cpu_ok())
        return -1;
    job J = {k, d, X, panels, hpad, M, npanels, 0, (M + POINT_BLOCK - 1) / POINT_BLOCK, 0, out_v, out_i};
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
    (void)k; (void)X; (void)M; (void)d; (void)panels; (void)hpad; (void)npanels; (void)nthreads;
    (void)out_v; (void)out_i;
    return -1;
#endif
}

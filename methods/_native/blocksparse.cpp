// lcbench's native block-sparse flash attention for the CPU: forward and backward over a plan of key items.
//
// Why a kernel of our own: the aten CPU flash kernel called per tile (methods/blocksparse.py) computes a
// partial tile whole under an additive mask, and cuts a call of fewer than 768 query rows into 64-row blocks;
// a mask whose edges cut tiles at token granularity (sliding windows, documents) pays for both. Here a query
// block walks only its plan's items: runs of full keys (any length, cut into KC-key chunks), and partial items
// of a few keys that carry the row range with any allowed key and, where needed, a bitmap. The query heads
// that share a KV head (and the mask) are stacked into one task ("GQA packing": row R of the task is query row
// R / g of head h0 + R % g), so every product is g times taller, K and V are read once per group, and a small
// query block still gives the BLAS a tall matrix. The matrix products are BLAS ``?gemm_`` calls (the library
// torch links, passed in at init); the online softmax, the masking and the log-sum-exp are the loops below.
//
// Layouts: q, k, v, out, dout, dq are contiguous [B, S, H, D] (row stride H * D); lse is [B, Hq, Sq]; the
// backward's dk, dv are per query head [B, Hq, Sk, D] (the caller sums them onto the kv heads).
// Plan: for pattern p and query block i, items[item_ptr[p * nqb + i] .. item_ptr[p * nqb + i + 1]) of
// (k0, k1, r0, r1, bits): keys [k0, k1) against the block's rows [r0, r1); bits = -1 (every pair allowed) or
// the offset of a (r1 - r0) x (k1 - k0) row-major uint8 bitmap. Query heads use pattern h when the mask has
// one pattern per head (n_patterns == Hq; no packing), else pattern 0.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace {

using i64 = int64_t;

typedef void (*sgemm_fn)(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                         const int*, const float*, const int*, const float*, float*, const int*);
typedef void (*dgemm_fn)(const char*, const char*, const int*, const int*, const int*, const double*,
                         const double*, const int*, const double*, const int*, const double*, double*, const int*);
typedef int (*threads_local_fn)(int);

sgemm_fn g_sgemm = nullptr;
dgemm_fn g_dgemm = nullptr;
threads_local_fn g_threads_local = nullptr;  // MKL_Set_Num_Threads_Local: one BLAS thread per worker

constexpr i64 KC = 512;  // keys per chunk of a run: the score block is QB x KC

// Column-major BLAS on row-major data: C[m x n] (row-major, ldc) = op(A) op(B) becomes C^T = op(B)^T op(A)^T.
inline void gemm(char ta, char tb, i64 m, i64 n, i64 k, float alpha, const float* a, i64 lda, const float* b,
                 i64 ldb, float beta, float* c, i64 ldc) {
    int im = int(m), in = int(n), ik = int(k), ia = int(lda), ib = int(ldb), ic = int(ldc);
    g_sgemm(&ta, &tb, &im, &in, &ik, &alpha, a, &ia, b, &ib, &beta, c, &ic);
}

inline void gemm(char ta, char tb, i64 m, i64 n, i64 k, double alpha, const double* a, i64 lda, const double* b,
                 i64 ldb, double beta, double* c, i64 ldc) {
    int im = int(m), in = int(n), ik = int(k), ia = int(lda), ib = int(ldb), ic = int(ldc);
    g_dgemm(&ta, &tb, &im, &in, &ik, &alpha, a, &ia, b, &ib, &beta, c, &ic);
}

// Row-major products used below, written once in terms of the column-major call.
// S[rows x n] = alpha * A[rows x D] B[n x D]^T
template <typename T>
inline void mm_abt(i64 rows, i64 n, i64 d, T alpha, const T* a, i64 lda, const T* b, i64 ldb, T* c, i64 ldc) {
    gemm('T', 'N', n, rows, d, alpha, b, ldb, a, lda, T(0), c, ldc);
}
// C[rows x D] += alpha * P[rows x n] V[n x D]
template <typename T>
inline void mm_ab_acc(i64 rows, i64 n, i64 d, T alpha, const T* p, i64 ldp, const T* v, i64 ldv, T* c, i64 ldc) {
    gemm('N', 'N', d, rows, n, alpha, v, ldv, p, ldp, T(1), c, ldc);
}
// C[n x D] += alpha * P[rows x n]^T X[rows x D]
template <typename T>
inline void mm_atb_acc(i64 rows, i64 n, i64 d, T alpha, const T* p, i64 ldp, const T* x, i64 ldx, T* c, i64 ldc) {
    gemm('N', 'T', d, n, rows, alpha, x, ldx, p, ldp, T(1), c, ldc);
}

// exp on 16 floats at a time, 0 below -87 (so -inf, a masked score, gives exactly 0); relative error ~1e-7.
typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
constexpr i64 W = 16;

#ifdef __AVX512F__
// exp(x) = 2^n * 2^f with n = round(x log2 e), |f| <= 1/2: a degree-6 fit of 2^f (relative error 2e-9 before
// rounding) in fused multiply-adds and AVX-512's scalef for 2^n, about half the instructions of the portable
// version below.
inline vf exp_vec(vf x) {
    const vf lo = vf{} - 87.0f;
    const __m512 xc = (__m512)(x < lo ? lo : x);
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    // f = x log2 e - n, with log2 e split in two floats so that f stays exact to float precision at large |x|
    __m512 f = _mm512_fmsub_ps(xc, _mm512_set1_ps(1.44269502162933349609375f), n);
    f = _mm512_fmadd_ps(xc, _mm512_set1_ps(1.925963033500011e-8f), f);
    __m512 p = _mm512_set1_ps(1.5370704932e-4f);
    for (float c : {1.3399848249e-3f, 9.6183735877e-3f, 5.5503290147e-2f, 2.4022647738e-1f, 6.9314718246e-1f, 1.0f})
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
    const vf y = (vf)_mm512_scalef_ps(p, n);
    return x < lo ? vf{} : y;
}
#else
// Cephes' polynomial on the reduced argument, 2^n through the exponent bits (GCC vector extensions, so it
// vectorises on any x86 the build targets).
inline vf exp_vec(vf x) {
    const vf lo = vf{} - 87.0f, hi = vf{} + 88.0f;
    vf xc = x < lo ? lo : x;
    xc = xc > hi ? hi : xc;
    const vf magic = vf{} + 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer
    const vf z = (xc * 1.44269504088896341f + magic) - magic;
    vf r = xc - z * 0.693359375f;
    r = r + z * 2.12194440e-4f;
    vf p = vf{} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const vi bits = (__builtin_convertvector(z, vi) + 127) << 23;
    const vf y = p * (vf)bits;
    return x < lo ? vf{} : y;
}
#endif

inline vf load(const float* x, i64 n) {  // n < W: the rest -inf
    vf v = vf{} - std::numeric_limits<float>::infinity();
    std::memcpy(&v, x, n * sizeof(float));
    return v;
}

// x[j] = exp(x[j] - shift) for j < n; returns the sum.
inline float exp_shift_sum(float* x, i64 n, float shift) {
    vf acc = vf{};
    i64 j = 0;
    for (; j + W <= n; j += W) {
        vf v;
        std::memcpy(&v, x + j, sizeof v);
        v = exp_vec(v - shift);
        std::memcpy(x + j, &v, sizeof v);
        acc += v;
    }
    if (j < n) {
        const vf v = exp_vec(load(x + j, n - j) - shift);
        std::memcpy(x + j, &v, (n - j) * sizeof(float));
        acc += v;
    }
    float sum = 0;
    for (i64 i = 0; i < W; ++i) sum += acc[i];
    return sum;
}
inline double exp_shift_sum(double* x, i64 n, double shift) {
    double sum = 0;
    for (i64 j = 0; j < n; ++j) sum += (x[j] = std::exp(x[j] - shift));
    return sum;
}

inline float row_max(const float* x, i64 n) {
    vf m = vf{} - std::numeric_limits<float>::infinity();
    i64 j = 0;
    for (; j + W <= n; j += W) {
        vf v;
        std::memcpy(&v, x + j, sizeof v);
        m = v > m ? v : m;
    }
    if (j < n) {
        const vf v = load(x + j, n - j);
        m = v > m ? v : m;
    }
    float out = m[0];
    for (i64 i = 1; i < W; ++i) out = std::max(out, m[i]);
    return out;
}
inline double row_max(const double* x, i64 n) {
    double m = -std::numeric_limits<double>::infinity();
    for (i64 j = 0; j < n; ++j) m = std::max(m, x[j]);
    return m;
}

inline float exp_scalar(float x) {
    vf v = vf{} + x;
    return exp_vec(v)[0];
}
inline double exp_scalar(double x) { return std::exp(x); }

template <typename T>
constexpr T neg_inf() {
    return -std::numeric_limits<T>::infinity();
}

struct Plan {
    i64 qb, nqb, n_patterns;
    const i64* item_ptr;
    const i64* items;  // [n, 5]: k0, k1, r0, r1, bits
    const uint8_t* bits;
};

struct Shape {
    i64 b, sq, sk, hq, hkv, d;
};

// The heads of one task: g query heads from h0 (sharing a KV head and a mask pattern), stacked row by row.
struct Heads {
    i64 h0, g, pattern;
};

// How many query heads one task stacks: the whole group of a KV head when every head shares the mask, else one
// (each head has its own pattern). Head set i is heads [i * g, (i + 1) * g).
inline i64 packed_heads(const Shape& sh, const Plan& plan) { return plan.n_patterns == 1 ? sh.hq / sh.hkv : 1; }
inline Heads heads_of(i64 set, i64 g, const Plan& plan) {
    return Heads{set * g, g, plan.n_patterns == 1 ? 0 : set * g};
}

// Query rows q0 .. q0 + rows of batch element b between a [B, S, H, D] tensor and the stacked layout (row R:
// query row q0 + R / g of head h0 + R % g; each query row's g heads are adjacent in both).
template <typename T>
inline void gather_rows(T* dst, const T* src, i64 b, i64 q0, i64 rows, Heads hd, const Shape& sh) {
    for (i64 r = 0; r < rows; ++r)
        std::memcpy(dst + r * hd.g * sh.d, src + ((b * sh.sq + q0 + r) * sh.hq + hd.h0) * sh.d,
                    hd.g * sh.d * sizeof(T));
}
template <typename T>
inline void scatter_rows(T* dst, const T* src, i64 b, i64 q0, i64 rows, Heads hd, const Shape& sh) {
    for (i64 r = 0; r < rows; ++r)
        std::memcpy(dst + ((b * sh.sq + q0 + r) * sh.hq + hd.h0) * sh.d, src + r * hd.g * sh.d,
                    hd.g * sh.d * sizeof(T));
}

// Masked pairs of a partial item's chunk become -inf (a zero bit); stacked row r reads bitmap row r / g.
template <typename T>
inline void apply_bits(T* s, i64 rows, i64 n, const uint8_t* bits, i64 ldbits, i64 g) {
    for (i64 r = 0; r < rows; ++r) {
        T* row = s + r * n;
        const uint8_t* br = bits + (r / g) * ldbits;
        for (i64 j = 0; j < n; ++j) row[j] = br[j] ? row[j] : neg_inf<T>();
    }
}

// Run fn(c0, n, r0, rows) for every chunk of query block qi's items, with s holding the chunk's scaled scores
// (rows x n, masked pairs -inf) and r0, rows counted in stacked rows (g per query row): the walk the forward
// and the backward share. qp is the block's stacked queries, d apart; kp the KV head's keys, ldk apart.
template <typename T, typename F>
void for_each_chunk(const Plan& plan, i64 pattern, i64 qi, i64 g, const T* qp, const T* kp, i64 ldk, i64 d,
                    T scale, T* s, F fn) {
    const i64* it = plan.items + 5 * plan.item_ptr[pattern * plan.nqb + qi];
    const i64* end = plan.items + 5 * plan.item_ptr[pattern * plan.nqb + qi + 1];
    for (; it < end; it += 5) {
        const i64 k0 = it[0], k1 = it[1], r0 = it[2] * g, rows = (it[3] - it[2]) * g, boff = it[4];
        for (i64 c0 = k0; c0 < k1; c0 += KC) {
            const i64 n = std::min(KC, k1 - c0);
            mm_abt(rows, n, d, scale, qp + r0 * d, d, kp + c0 * ldk, ldk, s, n);
            if (boff >= 0) apply_bits(s, rows, n, plan.bits + boff + (c0 - k0), k1 - k0, g);
            fn(c0, n, r0, rows);
        }
    }
}

// Run fn(task) for task in [0, n) on `threads` workers, each with a single-threaded BLAS.
template <typename F>
void parallel_tasks(i64 n, int threads, F fn) {
    threads = int(std::max<i64>(1, std::min<i64>(threads, n)));
    std::atomic<i64> next{0};
    auto worker = [&]() {
        int previous = g_threads_local ? g_threads_local(1) : 0;
        for (i64 t = next++; t < n; t = next++) fn(t);
        if (g_threads_local) g_threads_local(previous);
    };
    std::vector<std::thread> pool;
    for (int i = 1; i < threads; ++i) pool.emplace_back(worker);
    worker();
    for (auto& th : pool) th.join();
}

// Tasks (batch element, head set, query block); the block's stacked queries are copied together first.
template <typename T>
void forward(const T* q, const T* k, const T* v, T* out, T* lse, Shape sh, T scale, Plan plan, int threads) {
    const i64 d = sh.d, ldk = sh.hkv * d, group = sh.hq / sh.hkv, g = packed_heads(sh, plan);
    const i64 sets = sh.hq / g, M = plan.qb * g;
    parallel_tasks(sh.b * sets * plan.nqb, threads, [&](i64 task) {
        thread_local std::vector<T> s_buf, q_buf, acc_buf, m_buf, l_buf;
        s_buf.resize(M * KC);
        q_buf.resize(M * d);
        acc_buf.assign(M * d, T(0));
        m_buf.assign(M, neg_inf<T>());
        l_buf.assign(M, T(0));
        T *s = s_buf.data(), *qp = q_buf.data(), *acc = acc_buf.data(), *m = m_buf.data(), *l = l_buf.data();

        const i64 qi = task % plan.nqb, b = task / (plan.nqb * sets);
        const Heads hd = heads_of((task / plan.nqb) % sets, g, plan);
        const i64 q0 = qi * plan.qb, nr = std::min(plan.qb, sh.sq - q0);
        gather_rows(qp, q, b, q0, nr, hd, sh);
        const T* kp = k + b * sh.sk * ldk + (hd.h0 / group) * d;
        const T* vp = v + b * sh.sk * ldk + (hd.h0 / group) * d;
        for_each_chunk(plan, hd.pattern, qi, g, qp, kp, ldk, d, scale, s, [&](i64 c0, i64 n, i64 r0, i64 rows) {
            for (i64 r = 0; r < rows; ++r) {
                T* row = s + r * n;
                const T mx = row_max(row, n);
                const i64 R = r0 + r;
                const T m_new = std::max(m[R], mx);
                if (m_new == neg_inf<T>()) {  // no allowed key yet: probabilities 0
                    std::fill(row, row + n, T(0));
                    continue;
                }
                const T sum = exp_shift_sum(row, n, m_new);
                const T alpha = exp_scalar(m[R] - m_new);
                l[R] = l[R] * alpha + sum;
                m[R] = m_new;
                if (alpha != T(1)) {
                    T* a = acc + R * d;
                    for (i64 c = 0; c < d; ++c) a[c] *= alpha;
                }
            }
            mm_ab_acc(rows, n, d, T(1), s, n, vp + c0 * ldk, ldk, acc + r0 * d, d);
        });
        for (i64 R = 0; R < nr * g; ++R) {
            const bool empty = l[R] == T(0);
            const T inv = empty ? T(0) : T(1) / l[R];
            for (i64 c = 0; c < d; ++c) acc[R * d + c] *= inv;
            lse[(b * sh.hq + hd.h0 + R % g) * sh.sq + q0 + R / g] = empty ? neg_inf<T>() : m[R] + std::log(l[R]);
        }
        scatter_rows(out, acc, b, q0, nr, hd, sh);
    });
}

// Tasks (batch element, head set, part): part p of a head set's g slots takes query blocks p, p + g, ... and
// accumulates dK, dV in its own slot of the per-query-head dk, dv (so no two tasks write the same memory); dq
// rows belong to one query block, hence to one task.
template <typename T>
void backward(const T* dout, const T* q, const T* k, const T* v, const T* out, const T* lse, T* dq, T* dk, T* dv,
              Shape sh, T scale, Plan plan, int threads) {
    const i64 d = sh.d, ldk = sh.hkv * d, group = sh.hq / sh.hkv, g = packed_heads(sh, plan);
    const i64 sets = sh.hq / g, M = plan.qb * g;
    parallel_tasks(sh.b * sh.hq, threads, [&](i64 task) {
        std::vector<T> s_buf(M * KC), dp_buf(M * KC), q_buf(M * d), do_buf(M * d), o_buf(M * d), dq_buf(M * d),
            delta(M), lse_row(M);
        T *s = s_buf.data(), *dp = dp_buf.data(), *qp = q_buf.data(), *dop = do_buf.data(), *dqp = dq_buf.data();
        const i64 part = task % g, b = task / sh.hq;
        const Heads hd = heads_of((task / g) % sets, g, plan);
        const T* kp = k + b * sh.sk * ldk + (hd.h0 / group) * d;
        const T* vp = v + b * sh.sk * ldk + (hd.h0 / group) * d;
        T* dkp = dk + (b * sh.hq + hd.h0 + part) * sh.sk * d;
        T* dvp = dv + (b * sh.hq + hd.h0 + part) * sh.sk * d;
        for (i64 qi = part; qi < plan.nqb; qi += g) {
            const i64 q0 = qi * plan.qb, nr = std::min(plan.qb, sh.sq - q0);
            gather_rows(qp, q, b, q0, nr, hd, sh);
            gather_rows(dop, dout, b, q0, nr, hd, sh);
            gather_rows(o_buf.data(), out, b, q0, nr, hd, sh);
            for (i64 R = 0; R < nr * g; ++R) {
                T acc = 0;
                for (i64 c = 0; c < d; ++c) acc += dop[R * d + c] * o_buf[R * d + c];
                delta[R] = acc;
                const T l = lse[(b * sh.hq + hd.h0 + R % g) * sh.sq + q0 + R / g];
                lse_row[R] = l == neg_inf<T>() ? -neg_inf<T>() : l;  // no key: exp(s - inf) = 0
            }
            std::fill(dq_buf.begin(), dq_buf.end(), T(0));
            for_each_chunk(plan, hd.pattern, qi, g, qp, kp, ldk, d, scale, s, [&](i64 c0, i64 n, i64 r0, i64 rows) {
                for (i64 r = 0; r < rows; ++r) exp_shift_sum(s + r * n, n, lse_row[r0 + r]);  // P
                mm_atb_acc(rows, n, d, T(1), s, n, dop + r0 * d, d, dvp + c0 * d, d);  // dV += P^T dO
                mm_abt(rows, n, d, T(1), dop + r0 * d, d, vp + c0 * ldk, ldk, dp, n);  // dP = dO V^T
                for (i64 r = 0; r < rows; ++r) {
                    const T* p = s + r * n;
                    T* gr = dp + r * n;
                    const T dl = delta[r0 + r];
                    for (i64 j = 0; j < n; ++j) gr[j] = p[j] * (gr[j] - dl);  // dS
                }
                mm_ab_acc(rows, n, d, scale, dp, n, kp + c0 * ldk, ldk, dqp + r0 * d, d);  // dQ += dS K
                mm_atb_acc(rows, n, d, scale, dp, n, qp + r0 * d, d, dkp + c0 * d, d);  // dK += dS^T Q
            });
            scatter_rows(dq, dqp, b, q0, nr, hd, sh);
        }
    });
}

}  // namespace

extern "C" {

void lcb_init(void* sgemm, void* dgemm, void* threads_local) {
    g_sgemm = reinterpret_cast<sgemm_fn>(sgemm);
    g_dgemm = reinterpret_cast<dgemm_fn>(dgemm);
    g_threads_local = reinterpret_cast<threads_local_fn>(threads_local);
}

#define LCB_ENTRY_POINTS(T, SUFFIX)                                                                              \
    void lcb_forward_##SUFFIX(const T* q, const T* k, const T* v, T* out, T* lse, i64 b, i64 sq, i64 sk, i64 hq,  \
                              i64 hkv, i64 d, double scale, i64 qb, i64 nqb, i64 n_patterns, const i64* item_ptr, \
                              const i64* items, const uint8_t* bits, int threads) {                              \
        forward<T>(q, k, v, out, lse, Shape{b, sq, sk, hq, hkv, d}, T(scale),                                    \
                   Plan{qb, nqb, n_patterns, item_ptr, items, bits}, threads);                                   \
    }                                                                                                            \
    void lcb_backward_##SUFFIX(const T* dout, const T* q, const T* k, const T* v, const T* out, const T* lse,     \
                               T* dq, T* dk, T* dv, i64 b, i64 sq, i64 sk, i64 hq, i64 hkv, i64 d, double scale, \
                               i64 qb, i64 nqb, i64 n_patterns, const i64* item_ptr, const i64* items,           \
                               const uint8_t* bits, int threads) {                                               \
        backward<T>(dout, q, k, v, out, lse, dq, dk, dv, Shape{b, sq, sk, hq, hkv, d}, T(scale),                \
                    Plan{qb, nqb, n_patterns, item_ptr, items, bits}, threads);                                  \
    }

LCB_ENTRY_POINTS(float, f32)
LCB_ENTRY_POINTS(double, f64)

}  // extern "C"

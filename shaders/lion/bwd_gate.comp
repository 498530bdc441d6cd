#version 450
// LION backward: the per-token terms of the log-decay gradient (parallel over all chunks).
//
// With G_ij = scale (q_i . k_j) (do'_i . v'_j) M_ij (the gradient with respect to log M_ij;
// v' and do' are the value rows and upstream gradients, with the ones column of the normalizer
// under normalize), and per token
//   RF_i = sum_(j<i) G_ij,  RB_i = sum_(j>i) G_ij,  CF_j = sum_(i>j) G_ij,  CB_j = sum_(i<j) G_ij,
// the gradient of token t's log decay is da_t = sum_(u>t) (RF_u - CF_u) + sum_(u>=t) (CB_u - RB_u)
// (log M_ij = B_(i-1) - B_(j-1) for i > j and B_j - B_i for i < j, B the cumulative sum of a).
// This kernel writes w_u = RF_u - CF_u + CB_u - RB_u and r_u = RF_u - CF_u (binding 3, pairs
// [B, T, H, 2]); bwd_dg.comp does the reverse cumulative sum da_t = sum_(u>=t) w_u - r_u.
//
// Each term has an intra-chunk part, from the C x C block of G (two score blocks: q.k over K
// and do'.v' over V'), and an inter-chunk part through the states of the dq and dk products
// (host/lion_backward.c): with Sq^F/B the states of the dq product (sum of weighted v'_j k_j^T)
// and Dk^F/B those of the dk product (sum of weighted do'_i q_i^T, transposed mask),
//   RF_i += scale e^(E_i) do'_i^T Sq^F q_i,   RB_i += scale e^(X_i) do'_i^T Sq^B q_i,
//   CB_j += scale e^(P_j) v'_j^T Dk^F k_j,    CF_j += scale e^(R_j) v'_j^T Dk^B k_j,
// E, P, X, R the exclusive/inclusive prefix and suffix sums of a inside the chunk.
//
// Bindings: f32 rows (4-aligned, zero-padded) of q and k (0, 1), v' (2) and do' (9; the o slot's
// strides, pc.V = V' width), Sq (8) and Dk (10) as [H, slots, 2, align4(V'), align4(K)]; the
// base of binding 10 is passed in push word xs; the pairs (3) are packed.
// Grid: x = 1, y = heads, z = 64-token tiles. Lanes: (TW/RB) x (TW/CB).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(std430, binding = 10) readonly buffer S2B4 { vec4 s2_buf[]; };
#define S2_BASE pc.xs

const uint NCL = TW / CB;
const uint NRL = TW / RB;
const uint NL = NRL * NCL;

shared float s_G[TW * TW];            // masked q.k scores, then partial sums
shared float s_a[TW];
// the log factors of the forms in their order: E, X, R, P (exclusive/inclusive prefix and
// suffix sums of a inside each chunk)
shared float s_f[4][TW];
shared float s_t[4][TW];              // RF, RB, CF, CB

uint prow(uint b, uint t, uint h, uint X) { return ((b * pc.T + t) * pc.H + h) * X; }
// do' rows (binding 9) with the o slot's strides
uint do_row(uint b, uint t, uint h) { return pc.z_base + b * pc.o_sb + t * pc.o_st + h * pc.o_sh; }

// The four bilinear forms, in two pairs that share their rows and buffers:
//   f = 0 RF (do', Sq forward, q, e^E), 1 RB (do', Sq backward, q, e^X),
//   f = 2 CF (v', Dk backward, k, e^R), 3 CB (v', Dk forward, k, e^P).
// part[r] = sum over the state columns of (x_r^T S) . y_r for the lane's rows, S the state
// entering the rows' chunk; the lanes' parts (times scale e^factor) are added into s_t[f].
// One expansion per pair, with its buffers fixed: choosing the buffers by the form index
// inside one body makes the CPU driver load from both.
#define FORM_PAIR(XB, XROW, SB, SBASE, YB, YROW, F0)                                            \
    [[dont_unroll]] for (uint f_ = (F0); f_ < (F0) + 2u; f_++) {                                \
        const uint dir_ = f_ == 1u || f_ == 2u ? 1u : 0u;                                      \
        const uint srow_ = (SBASE) + (sslot * 2u + dir_) * Xv * Kp;                             \
        float part_[RB];                                                                        \
        uint xr_[RB], yr_[RB];                                                                  \
        [[unroll]] for (uint r_ = 0u; r_ < RB; r_++) {                                          \
            xr_[r_] = XROW(b, tb + min(i0 + r_, L - 1u), h);                                    \
            yr_[r_] = YROW(b, tb + min(i0 + r_, L - 1u), h);                                    \
            part_[r_] = 0.0;                                                                    \
        }                                                                                       \
        [[dont_unroll]] for (uint c0_ = j0; c0_ < Kp; c0_ += TW) {                              \
            [[unroll]] for (uint r_ = 0u; r_ < RB; r_++)                                        \
                [[unroll]] for (uint x_ = 0u; x_ < CB; x_++)                                    \
                    acc[r_][x_] = 0.0;                                                          \
            [[dont_unroll]] for (uint v_ = 0u; v_ < pc.V; v_ += 4u) {                           \
                vec4 sv_[4][CB / 4u];                                                           \
                [[unroll]] for (uint vv_ = 0u; vv_ < 4u; vv_++)                                 \
                    [[unroll]] for (uint x4_ = 0u; x4_ < CB / 4u; x4_++)                        \
                        sv_[vv_][x4_] =                                                         \
                            SB[(srow_ + (v_ + vv_) * Kp + min(c0_ + 4u * x4_, Kp - 4u)) >> 2u]; \
                [[unroll]] for (uint r_ = 0u; r_ < RB; r_++) {                                  \
                    const vec4 xa_ = XB[(xr_[r_] + v_) >> 2u];                                  \
                    [[unroll]] for (uint vv_ = 0u; vv_ < 4u; vv_++)                             \
                        [[unroll]] for (uint x4_ = 0u; x4_ < CB / 4u; x4_++) {                  \
                            const vec4 u_ = xa_[vv_] * sv_[vv_][x4_];                           \
                            acc[r_][4u * x4_] += u_.x;                                          \
                            acc[r_][4u * x4_ + 1u] += u_.y;                                     \
                            acc[r_][4u * x4_ + 2u] += u_.z;                                     \
                            acc[r_][4u * x4_ + 3u] += u_.w;                                     \
                        }                                                                       \
                }                                                                               \
            }                                                                                   \
            [[unroll]] for (uint r_ = 0u; r_ < RB; r_++)                                        \
                [[unroll]] for (uint x4_ = 0u; x4_ < CB / 4u; x4_++) {                          \
                    const uint cc_ = c0_ + 4u * x4_;                                            \
                    const vec4 y_ = YB[(yr_[r_] + min(cc_, Kp - 4u)) >> 2u];                    \
                    part_[r_] += cc_ < Kp ? dot(ROW4(acc, r_, x4_), y_) : 0.0;                  \
                }                                                                               \
        }                                                                                       \
        barrier();                                                                              \
        [[unroll]] for (uint r_ = 0u; r_ < RB; r_++)                                            \
            s_G[ci * TW + i0 + r_] = part_[r_] * exp(s_f[f_][i0 + r_]);                         \
        barrier();                                                                              \
        for (uint u_ = lid; u_ < TW; u_ += NL) {                                                \
            float sum_ = 0.0;                                                                   \
            for (uint k_ = 0u; k_ < NCL; k_++)                                                  \
                sum_ += s_G[k_ * TW + u_];                                                      \
            s_t[f_][u_] += pc.scale * sum_;                                                     \
        }                                                                                       \
    }

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint ri = lid / NCL, ci = lid % NCL;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    const uint C = CHUNK, nsub = TW / C;
    uint s, local0, b, t0, len;
    chunk_info(c, TW, s, local0);
    seq_info(s, b, t0, len);
    const uint L = min(TW, len - local0);
    const uint tb = t0 + local0;
    const uint Kp = align4(pc.K), Xv = align4(pc.V);
    const uint i0 = ri * RB, j0 = ci * CB;

    // cumulative log decays inside each chunk of the tile
    for (uint j = lid; j < TW; j += NL)
        s_a[j] = j < L ? log_decay(b, tb + j, h) : 0.0;
    barrier();
    if (lid == 0u) {
        for (uint u = 0u; u < TW; u += C) {
            float run = 0.0;
            for (uint j = u; j < u + C; j++) {
                s_f[0][j] = run;
                run += s_a[j];
                s_f[3][j] = run;
            }
            run = 0.0;
            for (uint j = u + C; j > u; j--) {
                s_f[1][j - 1u] = run;
                run += s_a[j - 1u];
                s_f[2][j - 1u] = run;
            }
        }
    }
    barrier();

    float acc[RB][CB];

    // ---- intra-chunk: G on the diagonal C x C blocks (zero on the diagonal itself) ----
    {
        uint xr[RB], yr[CB];
        [[unroll]] for (uint r = 0u; r < RB; r++)
            xr[r] = q_row(b, tb + min(i0 + r, L - 1u), h);
        [[unroll]] for (uint x = 0u; x < CB; x++)
            yr[x] = k_row(b, tb + min(j0 + x, L - 1u), h);
        [[unroll]] for (uint r = 0u; r < RB; r++)
            [[unroll]] for (uint x = 0u; x < CB; x++)
                acc[r][x] = 0.0;
        [[dont_unroll]] for (uint k = 0u; k < pc.K; k += 4u) {
            vec4 qa[RB], ka[CB];
            [[unroll]] for (uint r = 0u; r < RB; r++)
                qa[r] = q4_buf[(xr[r] + k) >> 2u];
            [[unroll]] for (uint x = 0u; x < CB; x++)
                ka[x] = k4_buf[(yr[x] + k) >> 2u];
            [[unroll]] for (uint r = 0u; r < RB; r++)
                [[unroll]] for (uint x = 0u; x < CB; x++)
                    acc[r][x] += dot(qa[r], ka[x]);
        }
        [[dont_unroll]] for (uint r = 0u; r < RB; r++) {
            const uint i = i0 + r;
            [[unroll]] for (uint x = 0u; x < CB; x++) {
                const uint j = j0 + x;
                const bool inside = i / C == j / C && i != j && i < L && j < L;
                const float m = exp(i > j ? s_f[0][i] - s_f[0][j] : s_f[3][j] - s_f[3][i]);
                s_G[i * TW + j] = inside ? acc[0][x] * m : 0.0;
            }
            ROTATE_ROWS(acc, CB)
        }

        [[unroll]] for (uint r = 0u; r < RB; r++)
            xr[r] = do_row(b, tb + min(i0 + r, L - 1u), h);
        [[unroll]] for (uint x = 0u; x < CB; x++)
            yr[x] = v_row(b, tb + min(j0 + x, L - 1u), h);
        [[unroll]] for (uint r = 0u; r < RB; r++)
            [[unroll]] for (uint x = 0u; x < CB; x++)
                acc[r][x] = 0.0;
        [[dont_unroll]] for (uint k = 0u; k < pc.V; k += 4u) {
            vec4 da[RB], va[CB];
            [[unroll]] for (uint r = 0u; r < RB; r++)
                da[r] = z4_buf[(xr[r] + k) >> 2u];
            [[unroll]] for (uint x = 0u; x < CB; x++)
                va[x] = v4_buf[(yr[x] + k) >> 2u];
            [[unroll]] for (uint r = 0u; r < RB; r++)
                [[unroll]] for (uint x = 0u; x < CB; x++)
                    acc[r][x] += dot(da[r], va[x]);
        }
        float rl[RB], ru[RB], cl[CB], cu[CB];
        [[unroll]] for (uint x = 0u; x < CB; x++) {
            cl[x] = 0.0;
            cu[x] = 0.0;
        }
        [[unroll]] for (uint r = 0u; r < RB; r++) {
            rl[r] = 0.0;
            ru[r] = 0.0;
            [[unroll]] for (uint x = 0u; x < CB; x++) {
                const float gg = s_G[(i0 + r) * TW + j0 + x] * acc[r][x];
                if (j0 + x < i0 + r) {
                    rl[r] += gg;
                    cl[x] += gg;
                } else {
                    ru[r] += gg;
                    cu[x] += gg;
                }
            }
        }
        barrier();
        [[unroll]] for (uint r = 0u; r < RB; r++) {
            s_G[ci * TW + i0 + r] = rl[r];
            s_G[(NCL + ci) * TW + i0 + r] = ru[r];
        }
        [[unroll]] for (uint x = 0u; x < CB; x++) {
            s_G[(2u * NCL + ri) * TW + j0 + x] = cl[x];
            s_G[(2u * NCL + NRL + ri) * TW + j0 + x] = cu[x];
        }
        barrier();
        for (uint u = lid; u < TW; u += NL) {
            float f0 = 0.0, f1 = 0.0, f2 = 0.0, f3 = 0.0;
            for (uint k = 0u; k < NCL; k++) {
                f0 += s_G[k * TW + u];
                f1 += s_G[(NCL + k) * TW + u];
            }
            for (uint k = 0u; k < NRL; k++) {
                f2 += s_G[(2u * NCL + k) * TW + u];
                f3 += s_G[(2u * NCL + NRL + k) * TW + u];
            }
            s_t[0][u] = pc.scale * f0;
            s_t[1][u] = pc.scale * f1;
            s_t[2][u] = pc.scale * f2;
            s_t[3][u] = pc.scale * f3;
        }
    }

    // ---- inter-chunk: the four bilinear forms with the states entering each chunk ----
    const uint sslot = h * pc.ntiles * nsub + c * nsub + i0 / C;
    FORM_PAIR(z4_buf, do_row, st4_buf, pc.st_base, q4_buf, q_row, 0u)
    FORM_PAIR(v4_buf, v_row, s2_buf, S2_BASE, k4_buf, k_row, 2u)
    barrier();

    for (uint u = lid; u < L; u += NL) {
        const float rf = s_t[0][u], rbk = s_t[1][u], cf = s_t[2][u], cb = s_t[3][u];
        const uint o = pc.o_base + 2u * prow(b, tb + u, h, 1u);
        o_buf[o] = rf - cf + cb - rbk;
        o_buf[o + 1u] = rf - cf;
    }
}

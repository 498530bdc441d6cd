#version 450
// LION backward: the per-token terms of the log-decay gradient (parallel over all chunks).
//
// With G_ij = scale (q_i . k_j) (do'_i . v'_j) M_ij (the gradient with respect to log M_ij;
// v' and do' are the value rows and upstream gradients, with the ones column of the normalizer
// under normalize), and per token
//   RF_i = sum_(j<i) G_ij,  RB_i = sum_(j>i) G_ij,  CF_j = sum_(i>j) G_ij,  CB_j = sum_(i<j) G_ij,
// the gradient of token t's log decay is da_t = sum_(u>t) (RF_u - CF_u) + sum_(u>=t) (CB_u - RB_u)
// (log M_ij = B_(i-1) - B_(j-1) for i > j and B_j - B_i for i < j, B the cumulative sum of a).
// Each term has an intra-chunk part, from the C x C block of G (two score blocks: q.k over K
// and do'.v' over V'), and an inter-chunk part through the states of the dq and dk products
// (host/lion_backward.c): with Sq^F/B the states of the dq product (sum of weighted v'_j k_j^T)
// and Dk^F/B those of the dk product (sum of weighted do'_i q_i^T, transposed mask),
//   RF_i += scale e^(E_i) do'_i^T Sq^F q_i,   RB_i += scale e^(X_i) do'_i^T Sq^B q_i,
//   CB_j += scale e^(P_j) v'_j^T Dk^F k_j,    CF_j += scale e^(R_j) v'_j^T Dk^B k_j,
// E, P, X, R the exclusive/inclusive prefix and suffix sums of a inside the chunk. The
// inter-chunk parts are the state parts of the dq and dk outputs dotted with q_i and k_j:
// chunk_output.comp forms them (F_TERMS) and writes them as pairs of their own.
// This kernel writes the intra-chunk parts of w_u = RF_u - CF_u + CB_u - RB_u and
// r_u = RF_u - CF_u as pair 0 of the pc.xs pairs per token (binding 3, [B, T, H, xs, 2]);
// bwd_dg.comp adds up each token's pairs and does the reverse cumulative sum
// da_t = sum_(u>=t) w_u - r_u.
//
// Bindings: f32 rows (4-aligned, zero-padded) of q and k (0, 1), v' (2) and do' (9; the o slot's
// strides, pc.V = V' width); the pairs (3) are packed.
// Grid: x = 1, y = heads, z = 64-token tiles. Lanes: (TW/RB) x (TW/CB).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

const uint NCL = TW / CB;
const uint NRL = TW / RB;
const uint NL = NRL * NCL;

shared float s_G[TW * TW];            // masked q.k scores, then partial sums
shared float s_a[TW], s_e[TW], s_p[TW];  // log decays, exclusive and inclusive prefix sums

uint prow(uint b, uint t, uint h, uint X) { return ((b * pc.T + t) * pc.H + h) * X; }
// do' rows (binding 9) with the o slot's strides
uint do_row(uint b, uint t, uint h) { return pc.z_base + b * pc.o_sb + t * pc.o_st + h * pc.o_sh; }

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint ri = lid / NCL, ci = lid % NCL;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    const uint C = CHUNK;
    uint s, local0, b, t0, len;
    chunk_info(c, TW, s, local0);
    seq_info(s, b, t0, len);
    const uint L = min(TW, len - local0);
    const uint tb = t0 + local0;
    const uint i0 = ri * RB, j0 = ci * CB;

    // cumulative log decays inside each chunk of the tile
    for (uint j = lid; j < TW; j += NL)
        s_a[j] = j < L ? log_decay(b, tb + j, h) : 0.0;
    barrier();
    if (lid == 0u) {
        for (uint u = 0u; u < TW; u += C) {
            float run = 0.0;
            for (uint j = u; j < u + C; j++) {
                s_e[j] = run;
                run += s_a[j];
                s_p[j] = run;
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
                const float m = exp(i > j ? s_e[i] - s_e[j] : s_p[j] - s_p[i]);
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
        for (uint u = lid; u < L; u += NL) {
            float rf = 0.0, rbk = 0.0, cf = 0.0, cb = 0.0;
            for (uint k = 0u; k < NCL; k++) {
                rf += s_G[k * TW + u];
                rbk += s_G[(NCL + k) * TW + u];
            }
            for (uint k = 0u; k < NRL; k++) {
                cf += s_G[(2u * NCL + k) * TW + u];
                cb += s_G[(2u * NCL + NRL + k) * TW + u];
            }
            const uint o = pc.o_base + 2u * prow(b, tb + u, h, pc.xs);
            o_buf[o] = pc.scale * (rf - cf + cb - rbk);
            o_buf[o + 1u] = pc.scale * (rf - cf);
        }
    }
}

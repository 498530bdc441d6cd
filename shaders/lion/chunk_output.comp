#version 450
// LION, chunk form, step 2 (parallel over all chunks): the output of chunk n,
//   O = (Q * e^E) S^F_n + (Q * e^X) S^B_n + ((Q K^T) . M) V
// with, local to the chunk, E_i = a_c0 + ... + a_(i-1) (exclusive prefix), X_i = a_(i+1) + ... +
// a_(c1-1) (exclusive suffix), and the full bidirectional mask inside the chunk:
//   log M_ij = E_i - E_j (i > j),  P_j - P_i (i < j),  0 (i = j),   P the inclusive prefix.
// Both differences subtract the later (more negative) cumulative sum, so every exponent is <= 0.
// With normalize the ones column gives den_i = (q_i e^E_i).zF + (q_i e^X_i).zB + sum_j A_ij and
// o_i = scale * O_i / (scale * den_i + eps).
// With F_TRANS (backward pass) the mask is M^T: E and P swap roles and X becomes the
// inclusive suffix R (see chunk_state.comp). With F_STATE_T (backward pass) the states are
// read transposed: those chunk_state wrote for the product with the roles of K and V swapped.
// With F_TERMS (backward pass, products without STATE_T) the kernel also writes the per-token
// terms of the log-decay gradient. With G_ij = scale (q_i . k_j) (do'_i . v'_j) M_ij and
//   RF_i = sum_(j<i) G_ij,  RB_i = sum_(j>i) G_ij,  CF_j = sum_(i>j) G_ij,  CB_j = sum_(i<j) G_ij,
// the gradient of token t's log decay is da_t = sum_(u>t) (RF_u - CF_u) + sum_(u>=t) (CB_u - RB_u)
// (docs/lion.md, "Decay gradients"); bwd_dg.comp needs w = RF - CF + CB - RB and r = RF - CF.
// Outside the chunk, RF_i and RB_i are the two state parts O^F_i, O^B_i of dq's output row i
// dotted with q_i, CB_j and CF_j those of dk's row j dotted with k_j: the two states run in
// separate passes and pF_i = scale O^F_i . y_i, pB_i = scale O^B_i . y_i with y_i the row of
// binding 9 (q or k: the o slot's strides, pc.V columns). Inside the chunk, dq's product (its
// score block is do' . v' masked with M) adds the row and column sums of G, with the q . k block
// of binding 9 and the v slot (k). The pairs go to slot vt (TRANS: V tiles + vt) of the
// 2 x V tiles pairs per token of binding 10 ([B, T, H, slots, 2], base in push word eps):
// dq's (pF - pB + intra w, pF + intra r), dk's (pF - pB, -pB).
// A workgroup covers a 64-token tile of a sequence, i.e. 64 / C chunks (C = 16, 32 or 64): the
// score block is computed for the whole tile and masked to the diagonal C x C blocks.
// Grid: x = V tiles of TW, y = heads, z = 64-token tiles.
// Lanes: (TW/RB) x (TW/CB). Score phase: lane (ri, ci) computes the RB x CB block (rows ri*RB..,
// key columns ci*CB..) of the masked scores into shared memory; output phase: the same lane owns
// output rows ri*RB.. and value columns ci*CB.. of the V tile.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

const uint NCL = TW / CB;
const uint NRL = TW / RB;
const uint NL = NRL * NCL;

shared vec4 s_A[TW * TW / 4u];       // masked scores, row-major
shared float s_a[TW];
shared vec4 s_e4[TW / 4u], s_p4[TW / 4u], s_x4[TW / 4u];

layout(std430, binding = 10) writeonly buffer TMB { float tm_buf[]; };

// Elements i..i+3 of a row of binding 9 with pc.V columns (4-aligned rows), zero past them.
vec4 ld_y4(uint row, uint i)
{
    const uint n4 = align4(pc.V);
    const vec4 x = z4_buf[(row + min(i, n4 - 4u)) >> 2u];
    return i < n4 ? x : vec4(0.0);
}

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint ri = lid / NCL, ci = lid % NCL;
    const uint vt = gl_WorkGroupID.x;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    const uint C = CHUNK, nsub = TW / C;
    uint s, local0, b, t0, len;
    chunk_info(c, TW, s, local0);
    seq_info(s, b, t0, len);
    const uint L = min(TW, len - local0);
    const uint tb = t0 + local0;
    const uint Kp = align4(pc.K), Va = pc.xs;
    const uint i0 = ri * RB, j0 = ci * CB;

    // cumulative log decays inside each chunk of the tile
    for (uint j = lid; j < TW; j += NL) {
        float a = 0.0;
        if (j < L)
            a = log_decay(b, tb + j, h);
        s_a[j] = a;
    }
    barrier();
    if (lid == 0u) {
        // with TRANS (M^T) the roles of the prefixes swap and the future factor is the
        // inclusive suffix: log M^T_ij = P_i - P_j (i > j), E_j - E_i (i < j)
        for (uint u = 0u; u < TW; u += C) {
            float run = 0.0;
            for (uint j = u; j < u + C; j++) {
                const float ex = run;
                run += s_a[j];
                s_e4[j >> 2u][j & 3u] = TRANS ? run : ex;
                s_p4[j >> 2u][j & 3u] = TRANS ? ex : run;
            }
            run = 0.0;
            for (uint j = u + C; j > u; j--) {
                const float ex = run;
                run += s_a[j - 1u];
                s_x4[(j - 1u) >> 2u][(j - 1u) & 3u] = TRANS ? run : ex;
            }
        }
    }
    barrier();

    float acc[RB][CB];

    // ---- scores: A = (Q K^T) . M, zero off the diagonal chunks and past the L tokens ----
    {
        uint qr[RB], kr[CB];
        [[unroll]] for (uint r = 0u; r < RB; r++)
            qr[r] = q_row(b, tb + min(i0 + r, L - 1u), h);
        [[unroll]] for (uint x = 0u; x < CB; x++)
            kr[x] = k_row(b, tb + min(j0 + x, L - 1u), h);
        qk_block(qr, kr, acc);
        float ej[CB], pj[CB];
        [[unroll]] for (uint x4 = 0u; x4 < CB / 4u; x4++) {
            const vec4 e = s_e4[j0 / 4u + x4], p = s_p4[j0 / 4u + x4];
            [[unroll]] for (uint y = 0u; y < 4u; y++) {
                ej[4u * x4 + y] = e[y];
                pj[4u * x4 + y] = p[y];
            }
        }
        [[dont_unroll]] for (uint r = 0u; r < RB; r++) {
            const uint i = i0 + r;
            const float ei = s_e4[i >> 2u][i & 3u], pi = s_p4[i >> 2u][i & 3u];
            [[unroll]] for (uint x4 = 0u; x4 < CB / 4u; x4++) {
                vec4 a;
                [[unroll]] for (uint y = 0u; y < 4u; y++) {
                    const uint x = 4u * x4 + y, j = j0 + x;
                    const float m = i == j ? 1.0 : exp(i > j ? ei - ej[x] : pj[x] - pi);
                    a[y] = (i / C == j / C && i < L && j < L) ? acc[0][x] * m : 0.0;
                }
                s_A[(i * TW + j0) / 4u + x4] = a;
            }
            ROTATE_ROWS(acc, CB)
        }
    }
    barrier();

    // ---- output ----
    const uint col0 = vt * TW + ci * CB;
    const uint slot = c * nsub + i0 / C;   // chunk of rows i0 .. i0 + RB - 1
    const uint sbase = (h * pc.ntiles * nsub + slot) * 2u * Kp;  // forward rows; backward + Kp
    float den[RB], fe[RB], fx[RB];
    uint qr[RB];
    [[unroll]] for (uint r4 = 0u; r4 < RB / 4u; r4++) {
        const vec4 e = exp(s_e4[i0 / 4u + r4]), x = exp(s_x4[i0 / 4u + r4]);
        [[unroll]] for (uint y = 0u; y < 4u; y++) {
            fe[4u * r4 + y] = e[y];
            fx[4u * r4 + y] = x[y];
        }
    }
    [[unroll]] for (uint r = 0u; r < RB; r++) {
        qr[r] = q_row(b, tb + min(i0 + r, L - 1u), h);
        den[r] = 0.0;
        [[unroll]] for (uint x = 0u; x < CB; x++)
            acc[r][x] = 0.0;
    }

    // past and future through the two states
    float pf[RB], pt[RB];   // F_TERMS: the forward state part and both parts dotted with y_i
    if (TERMS) {
        // one state per pass, the forms taken between the passes
        [[dont_unroll]] for (uint d = 0u; d < 2u; d++) {
            [[dont_unroll]] for (uint k = 0u; k < pc.K; k += 4u) {
                vec4 sv[4][CB / 4u];
                [[unroll]] for (uint kk = 0u; kk < 4u; kk++) {
                    const uint rs = pc.st_base + (sbase + d * Kp + k + kk) * Va + col0;
                    [[unroll]] for (uint x4 = 0u; x4 < CB / 4u; x4++)
                        sv[kk][x4] = st4_buf[(rs + min(col0 + 4u * x4, Va - 4u) - col0) >> 2u];
                }
                [[unroll]] for (uint r = 0u; r < RB; r++) {
                    const vec4 qd = ld_q4(qr[r], k) * (d == 0u ? fe[r] : fx[r]);
                    [[unroll]] for (uint kk = 0u; kk < 4u; kk++)
                        [[unroll]] for (uint x4 = 0u; x4 < CB / 4u; x4++) {
                            const vec4 u = qd[kk] * sv[kk][x4];
                            acc[r][4u * x4] += u.x;
                            acc[r][4u * x4 + 1u] += u.y;
                            acc[r][4u * x4 + 2u] += u.z;
                            acc[r][4u * x4 + 3u] += u.w;
                        }
                }
            }
            [[unroll]] for (uint r = 0u; r < RB; r++) {
                const uint yr = pc.z_base + b * pc.o_sb + (tb + min(i0 + r, L - 1u)) * pc.o_st +
                                h * pc.o_sh;
                float y = 0.0;
                [[unroll]] for (uint x4 = 0u; x4 < CB / 4u; x4++)
                    y += dot(ROW4(acc, r, x4), ld_y4(yr, col0 + 4u * x4));
                pf[r] = d == 0u ? y : pf[r];
                pt[r] = y;
            }
        }
    } else {
        [[dont_unroll]] for (uint k = 0u; k < pc.K; k += 4u) {
            vec4 sf[4][CB / 4u], sb[4][CB / 4u];
            if (STATE_T) {
                // the states stored transposed ([Va][Kp] per direction): one vector along K per
                // column, regrouped into the same sf/sb layout
                const uint bf = pc.st_base + sbase * Va + k, bb = bf + Kp * Va;
                [[unroll]] for (uint x4 = 0u; x4 < CB / 4u; x4++)
                    [[unroll]] for (uint e = 0u; e < 4u; e++) {
                        const uint cx = min(col0 + 4u * x4 + e, Va - 1u);
                        const vec4 tf = st4_buf[(bf + cx * Kp) >> 2u];
                        const vec4 tb = st4_buf[(bb + cx * Kp) >> 2u];
                        [[unroll]] for (uint kk = 0u; kk < 4u; kk++) {
                            sf[kk][x4][e] = tf[kk];
                            sb[kk][x4][e] = tb[kk];
                        }
                    }
            } else {
                [[unroll]] for (uint kk = 0u; kk < 4u; kk++) {
                    const uint rf = pc.st_base + (sbase + k + kk) * Va + col0;
                    const uint rb = rf + Kp * Va;
                    // columns past Va read a valid column instead: they only feed outputs never
                    // stored
                    [[unroll]] for (uint x4 = 0u; x4 < CB / 4u; x4++) {
                        const uint cx = min(col0 + 4u * x4, Va - 4u) - col0;
                        sf[kk][x4] = st4_buf[(rf + cx) >> 2u];
                        sb[kk][x4] = st4_buf[(rb + cx) >> 2u];
                    }
                }
            }
            vec4 zf = vec4(0.0), zb = vec4(0.0);
            if (NORMALIZE) {
                zf = z4_buf[(pc.z_base + sbase + k) >> 2u];
                zb = z4_buf[(pc.z_base + sbase + Kp + k) >> 2u];
            }
            [[unroll]] for (uint r = 0u; r < RB; r++) {
                const vec4 q = ld_q4(qr[r], k);
                const vec4 qf = q * fe[r], qb = q * fx[r];
                den[r] += dot(qf, zf) + dot(qb, zb);
                [[unroll]] for (uint kk = 0u; kk < 4u; kk++)
                    [[unroll]] for (uint x4 = 0u; x4 < CB / 4u; x4++) {
                        const vec4 u = qf[kk] * sf[kk][x4] + qb[kk] * sb[kk][x4];
                        acc[r][4u * x4] += u.x;
                        acc[r][4u * x4 + 1u] += u.y;
                        acc[r][4u * x4 + 2u] += u.z;
                        acc[r][4u * x4 + 3u] += u.w;
                    }
            }
        }
    }

    // inside the chunk
    const uint jlo = (i0 / C) * C;
    const uint jhi = min(jlo + C, L);
    AV_BLOCK(s_A, i0, jlo, jhi, tb, L - 1u, h, b, col0, acc, den)
    STORE_BLOCK(i0, L, tb, h, b, col0, acc, den)

    if (TERMS) {
        // the intra-chunk parts (dq's product, first tile): G_ij / scale = (q_i . k_j) s_A_ij off
        // the diagonal (s_A holds (do'_i . v'_j) M_ij inside the chunks, zero elsewhere), its row
        // sums left (RF) and right (RB) of the diagonal, column sums below (CF) and above (CB)
        const bool intra = !TRANS && vt == 0u;
        float rl[RB], ru[RB], cl[CB], cu[CB];
        [[unroll]] for (uint r = 0u; r < RB; r++) {
            rl[r] = 0.0;
            ru[r] = 0.0;
        }
        [[unroll]] for (uint x = 0u; x < CB; x++) {
            cl[x] = 0.0;
            cu[x] = 0.0;
        }
        if (intra) {
            // q rows in binding 9 (o strides), k rows in the v slot, both pc.V wide
            uint yr[RB], kr[CB];
            [[unroll]] for (uint r = 0u; r < RB; r++) {
                yr[r] = pc.z_base + b * pc.o_sb + (tb + min(i0 + r, L - 1u)) * pc.o_st +
                        h * pc.o_sh;
                [[unroll]] for (uint x = 0u; x < CB; x++)
                    acc[r][x] = 0.0;
            }
            [[unroll]] for (uint x = 0u; x < CB; x++)
                kr[x] = v_row(b, tb + min(j0 + x, L - 1u), h);
            [[dont_unroll]] for (uint k = 0u; k < pc.V; k += 4u) {
                vec4 qa[RB], ka[CB];
                [[unroll]] for (uint r = 0u; r < RB; r++)
                    qa[r] = ld_y4(yr[r], k);
                [[unroll]] for (uint x = 0u; x < CB; x++)
                    ka[x] = ld_v4(kr[x], k);
                [[unroll]] for (uint r = 0u; r < RB; r++)
                    [[unroll]] for (uint x = 0u; x < CB; x++)
                        acc[r][x] += dot(qa[r], ka[x]);
            }
            [[unroll]] for (uint r = 0u; r < RB; r++)
                [[unroll]] for (uint x4 = 0u; x4 < CB / 4u; x4++) {
                    const vec4 sa = s_A[((i0 + r) * TW + j0) / 4u + x4];
                    [[unroll]] for (uint e = 0u; e < 4u; e++) {
                        const uint x = 4u * x4 + e;
                        const float g = acc[r][x] * sa[e];
                        if (j0 + x < i0 + r) {
                            rl[r] += g;
                            cl[x] += g;
                        } else if (j0 + x > i0 + r) {
                            ru[r] += g;
                            cu[x] += g;
                        }
                    }
                }
        }
        // the lanes' forms and intra-chunk sums summed over their column (row) groups in s_A
        // (free after the reads above): [w, x, RF, RB] x NCL x TW, then [CF, CB] x NRL x TW
        barrier();
        [[unroll]] for (uint r4 = 0u; r4 < RB / 4u; r4++) {
            vec4 w, x;
            [[unroll]] for (uint e = 0u; e < 4u; e++) {
                const float fb = pt[4u * r4 + e] - pf[4u * r4 + e];
                w[e] = pf[4u * r4 + e] - fb;
                x[e] = TRANS ? -fb : pf[4u * r4 + e];
            }
            s_A[(ci * TW + i0) / 4u + r4] = w;
            s_A[((NCL + ci) * TW + i0) / 4u + r4] = x;
            s_A[((2u * NCL + ci) * TW + i0) / 4u + r4] = vec4(rl[4u * r4], rl[4u * r4 + 1u],
                                                            rl[4u * r4 + 2u], rl[4u * r4 + 3u]);
            s_A[((3u * NCL + ci) * TW + i0) / 4u + r4] = vec4(ru[4u * r4], ru[4u * r4 + 1u],
                                                            ru[4u * r4 + 2u], ru[4u * r4 + 3u]);
        }
        [[unroll]] for (uint x4 = 0u; x4 < CB / 4u; x4++) {
            s_A[(4u * NCL * TW + ri * TW + j0) / 4u + x4] =
                vec4(cl[4u * x4], cl[4u * x4 + 1u], cl[4u * x4 + 2u], cl[4u * x4 + 3u]);
            s_A[(4u * NCL * TW + (NRL + ri) * TW + j0) / 4u + x4] =
                vec4(cu[4u * x4], cu[4u * x4 + 1u], cu[4u * x4 + 2u], cu[4u * x4 + 3u]);
        }
        barrier();
        const uint nvt = (pc.V + TW - 1u) / TW, nslot = 2u * nvt;
        const uint tslot = (TRANS ? nvt : 0u) + vt;
        for (uint u = lid; u < L; u += NL) {
            float w = 0.0, x = 0.0, rf = 0.0, rbk = 0.0, cf = 0.0, cb = 0.0;
            for (uint k = 0u; k < NCL; k++) {
                w += s_A[(k * TW + u) / 4u][u & 3u];
                x += s_A[((NCL + k) * TW + u) / 4u][u & 3u];
                rf += s_A[((2u * NCL + k) * TW + u) / 4u][u & 3u];
                rbk += s_A[((3u * NCL + k) * TW + u) / 4u][u & 3u];
            }
            for (uint k = 0u; k < NRL; k++) {
                cf += s_A[(4u * NCL * TW + k * TW + u) / 4u][u & 3u];
                cb += s_A[(4u * NCL * TW + (NRL + k) * TW + u) / 4u][u & 3u];
            }
            const uint o = floatBitsToUint(pc.eps) +
                           (((b * pc.T + tb + u) * pc.H + h) * nslot + tslot) * 2u;
            tm_buf[o] = pc.scale * (w + (rf - cf + cb - rbk));
            tm_buf[o + 1u] = pc.scale * (x + (rf - cf));
        }
    }
}

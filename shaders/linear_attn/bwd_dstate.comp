#version 450
// Causal linear attention, backward, step 3 (parallel over all chunks): each chunk's own
// contribution to the gradient of the state entering it,
//   X = scale * (Q * e^G)^T do'      (K x VP; do' with the normalizer column),
// the forward's state contribution with keys -> q e^G (decay from the chunk start) and
// values -> do'. Workgroup of 128 threads = 16 x 8 computes a 64 x 64 tile; thread (ti, tj)
// owns rows 4ti..4ti+3 and columns 8tj..8tj+7 (one vec4 read of decayed queries and two of
// gradients per token). Grid: x = key tiles * column tiles, y = heads, z = chunks. P0 = C.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "bwd_common.glsl"

const uint NT = 128u;
const uint TR = 64u;   // rows (keys) per tile
const uint TC = 64u;   // columns per tile

shared float s_qe[C * TR];                // [t][row]: q_t[i] e^(G_t[i])
shared vec4 s_d4[(C / 2u) * TC / 4u];     // half a chunk of do'

void main()
{
    load_strides();
    const uint lid = gl_LocalInvocationID.x;
    const uint ti = lid / 8u, tj = lid % 8u;
    const uint ntc = (VP + TC - 1u) / TC;
    const uint kt = gl_WorkGroupID.x / ntc, ct = gl_WorkGroupID.x % ntc;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    uint s, b, tb, L, local0, len;
    chunk_coords(c, s, b, tb, L, local0, len);
    chunk_scalar_decay(lid, NT, b, tb, h, L);
    for (uint sub = 0; sub < TR; sub += KT) {
        const uint x0 = kt * TR + sub;
        chunk_channel_decay(lid, b, tb, h, L, x0);
        for (uint e = lid; e < C * KT; e += NT) {
            const uint t = e / KT, xx = e % KT;
            s_qe[t * TR + sub + xx] =
                (t < L && x0 + xx < K) ? load_q(b, tb + t, h, x0 + xx) * exp(s_gc[xx * C + t]) : 0.0;
        }
    }

    vec4 acc[8];   // acc[x][a]: key row 4ti+a, column 8tj+x
    [[unroll]] for (uint x = 0; x < 8u; x++)
        acc[x] = vec4(0.0);
    for (uint v0 = 0; v0 < L; v0 += C / 2u) {
        barrier();
        for (uint e = lid; e < (C / 2u) * TC; e += NT) {
            const uint t = v0 + e / TC, cc = ct * TC + e % TC;
            s_d4[e >> 2u][e & 3u] = (t < L && cc < VP) ? load_dop(b, tb + t, h, cc, c, t) : 0.0;
        }
        barrier();
        const uint tn = min(C / 2u, L - v0);
        for (uint t = 0; t < tn; t++) {
            const uint kb = (v0 + t) * TR + 4u * ti;
            const vec4 qe = vec4(s_qe[kb], s_qe[kb + 1u], s_qe[kb + 2u], s_qe[kb + 3u]);
            const vec4 w0 = s_d4[(t * TC) / 4u + 2u * tj];
            const vec4 w1 = s_d4[(t * TC) / 4u + 2u * tj + 1u];
            [[unroll]] for (uint x = 0; x < 4u; x++) {
                acc[x] += qe * w0[x];
                acc[x + 4u] += qe * w1[x];
            }
        }
    }
    const uint db = chunk_row(pc.r_dst, h, c, K * VP);
    [[unroll]] for (uint a = 0; a < 4u; a++) {
        const uint i = kt * TR + 4u * ti + a;
        [[unroll]] for (uint x = 0; x < 8u; x++) {
            const uint col = ct * TC + 8u * tj + x;
            if (i < K && col < VP)
                scr[db + i * VP + col] = pc.scale * acc[x][a];
        }
    }
}

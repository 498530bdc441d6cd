#version 450
// Causal linear attention, chunk form, step 3 (parallel over all chunks): the output
//   O = scale * ( (Q * e^G) S + ((Q K^T) . D) V ),  D_ij = e^(G_i - G_j) for j <= i,
// with S the state entering the chunk (from step 2). With normalize the ones column gives the
// denominator scale * q.z + eps. Every exponent is <= 0: no overflow for any decay.
// Workgroup: 16 x 16 threads; thread (ti, tj) owns rows ti + 16a of the chunk, key columns
// tj + 16b of the score block and value columns tj + 16c of the output tile.
// Grid: x = value tiles of VT, y = heads, z = chunks. P0 = C (16, 32, 64), P1 = VT.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

const uint C = P0;
const uint VT = P1;
const uint KT = 16u;
const uint R = C / 16u;      // rows (and score columns) per thread
const uint CV = VT / 16u;    // output columns per thread

// phase A: q, k, per-channel G tiles of C x KT, state tile KT x VT and the z column
// phase B: the score block C x C and a value tile KT x VT
const uint OFF_Q = 0u, OFF_K = C * KT, OFF_G = 2u * C * KT, OFF_S = 3u * C * KT;
const uint OFF_Z = OFF_S + KT * VT;
const uint SIZE_A = OFF_Z + KT;
const uint OFF_A = 0u, OFF_V = C * C;
const uint SIZE_B = C * C + KT * VT;
shared float smem[SIZE_A > SIZE_B ? SIZE_A : SIZE_B];
shared float s_gs[C];

void main()
{
    const uint lid = gl_LocalInvocationID.x;
    const uint ti = lid / 16u, tj = lid % 16u;
    const uint vt = gl_WorkGroupID.x;
    const uint h = pc.h_begin + gl_WorkGroupID.y;
    const uint c = pc.c_begin + gl_WorkGroupID.z;
    uint s, local0, b, t0, len;
    chunk_info(c, C, s, local0);
    seq_info(s, b, t0, len);
    const uint L = min(C, len - local0);
    const uint tb = t0 + local0;
    const uint sbase = pc.st_base + (h * pc.nchunks + c) * K * VP;

    for (uint j = lid; j < C; j += 256u)
        s_gs[j] = j < L ? log_decay_scalar(b, tb + j, h) : 0.0;
    barrier();
    if (lid == 0u)
        for (uint j = 1u; j < L; j++)
            s_gs[j] += s_gs[j - 1u];
    barrier();

    float A[R][R];
    float O[R][CV];
    float Dn[R];
    for (uint a = 0; a < R; a++) {
        Dn[a] = 0.0;
        for (uint x = 0; x < R; x++) A[a][x] = 0.0;
        for (uint x = 0; x < CV; x++) O[a][x] = 0.0;
    }
    float gk_run = 0.0; // running per-channel cumulative decay (threads lid < KT)

    for (uint k0 = 0; k0 < K; k0 += KT) {
        for (uint e = lid; e < C * KT; e += 256u) {
            uint j = e / KT, x = e % KT, i = k0 + x;
            bool ok = j < L && i < K;
            smem[OFF_Q + e] = ok ? load_q(b, tb + j, h, i) : 0.0;
            smem[OFF_K + e] = ok ? load_k(b, tb + j, h, i) : 0.0;
        }
        if (HAS_GK && lid < KT) {
            uint i = k0 + lid;
            gk_run = 0.0;
            for (uint j = 0; j < C; j++) {
                if (j < L && i < K)
                    gk_run += log_decay_channel(b, tb + j, h, i);
                smem[OFF_G + j * KT + lid] = s_gs[j] + gk_run;
            }
        }
        for (uint e = lid; e < KT * VT; e += 256u) {
            uint x = e / VT, y = e % VT, i = k0 + x, col = vt * VT + y;
            smem[OFF_S + e] = (i < K && col < V) ? state_buf[sbase + i * VP + col] : 0.0;
        }
        if (NORMALIZE && lid < KT) {
            uint i = k0 + lid;
            smem[OFF_Z + lid] = i < K ? state_buf[sbase + i * VP + V] : 0.0;
        }
        barrier();

        for (uint a = 0; a < R; a++) {
            const uint i = ti + 16u * a;
            for (uint x = 0; x < KT; x++) {
                float qv = smem[OFF_Q + i * KT + x];
                float qe = HAS_GK ? qv * exp(smem[OFF_G + i * KT + x]) : qv;
                for (uint y = 0; y < CV; y++)
                    O[a][y] += qe * smem[OFF_S + x * VT + tj + 16u * y];
                if (NORMALIZE)
                    Dn[a] += qe * smem[OFF_Z + x];
            }
            for (uint bb = 0; bb < R; bb++) {
                const uint j = tj + 16u * bb;
                if (j <= i) {
                    float acc = 0.0;
                    if (HAS_GK) {
                        for (uint x = 0; x < KT; x++)
                            acc += smem[OFF_Q + i * KT + x] * smem[OFF_K + j * KT + x] *
                                   exp(smem[OFF_G + i * KT + x] - smem[OFF_G + j * KT + x]);
                    } else {
                        for (uint x = 0; x < KT; x++)
                            acc += smem[OFF_Q + i * KT + x] * smem[OFF_K + j * KT + x];
                    }
                    A[a][bb] += acc;
                }
            }
        }
        barrier();
    }

    // scalar decays factor out of the K sums
    if (!HAS_GK) {
        for (uint a = 0; a < R; a++) {
            const uint i = ti + 16u * a;
            const float ei = exp(s_gs[i]);
            for (uint y = 0; y < CV; y++) O[a][y] *= ei;
            Dn[a] *= ei;
            for (uint bb = 0; bb < R; bb++) {
                const uint j = tj + 16u * bb;
                A[a][bb] *= j <= i ? exp(s_gs[i] - s_gs[j]) : 0.0;
            }
        }
    }

    // phase B: scores to shared, then O += A V over value tiles of KT rows
    for (uint a = 0; a < R; a++)
        for (uint bb = 0; bb < R; bb++) {
            const uint i = ti + 16u * a, j = tj + 16u * bb;
            smem[OFF_A + i * C + j] = (j <= i && j < L) ? A[a][bb] : 0.0;
        }
    barrier();
    if (NORMALIZE)
        for (uint a = 0; a < R; a++) {
            const uint i = ti + 16u * a;
            float rs = 0.0;
            for (uint j = 0; j <= i; j++)
                rs += smem[OFF_A + i * C + j];
            Dn[a] += rs;
        }
    for (uint j0 = 0; j0 < L; j0 += KT) {
        for (uint e = lid; e < KT * VT; e += 256u) {
            uint x = e / VT, y = e % VT, j = j0 + x, col = vt * VT + y;
            smem[OFF_V + e] = (j < L && col < V) ? load_v(b, tb + j, h, col) : 0.0;
        }
        barrier();
        for (uint a = 0; a < R; a++) {
            const uint i = ti + 16u * a;
            for (uint x = 0; x < KT; x++) {
                float av = smem[OFF_A + i * C + j0 + x];
                for (uint y = 0; y < CV; y++)
                    O[a][y] += av * smem[OFF_V + x * VT + tj + 16u * y];
            }
        }
        barrier();
    }

    for (uint a = 0; a < R; a++) {
        const uint i = ti + 16u * a;
        if (i >= L)
            continue;
        for (uint y = 0; y < CV; y++) {
            const uint col = vt * VT + tj + 16u * y;
            if (col < V) {
                float o = pc.scale * O[a][y];
                if (NORMALIZE)
                    o /= pc.scale * Dn[a] + pc.eps;
                store_o(b, tb + i, h, col, o);
            }
        }
    }
}

// Sequence and chunk addressing shared by the ops. Needs, before inclusion: the spec constant
// VARLEN, push constant pc.T (tokens per batch row), and the buffers seqtab (uvec4 per sequence:
// token start, length, first chunk, 0) and chunktab (uvec2 per chunk: sequence, first token
// within the sequence). Without VARLEN, sequence s is batch row s and covers tokens [0, T).
#ifndef VKLA_SEQS_GLSL
#define VKLA_SEQS_GLSL

// b: batch row of the tensors, t0: first token, len: tokens
void seq_info(uint s, out uint b, out uint t0, out uint len)
{
    if (VARLEN) {
        uvec4 e = seqtab[s];
        b = 0u;
        t0 = e.x;
        len = e.y;
    } else {
        b = s;
        t0 = 0u;
        len = pc.T;
    }
}

// chunk c -> sequence s and the chunk's first token (local to the sequence)
void chunk_info(uint c, uint C, out uint s, out uint local0)
{
    if (VARLEN) {
        uvec2 e = chunktab[c];
        s = e.x;
        local0 = e.y;
    } else {
        uint nc = (pc.T + C - 1u) / C;
        s = c / nc;
        local0 = (c - s * nc) * C;
    }
}

#endif

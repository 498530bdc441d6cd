/* vkla-make-input: writes a deterministic random input directory for vkla-run.
 *   vkla-make-input OP [--B N] [--T N] [--H N] [--K N] [--V N] [--gate none|g|g_gamma|gk]
 *                   [--h0] [--grads] [--seqlens L1,L2,...] [--seed N] --out DIR
 * With --seqlens the sequences are packed (B = 1) and cu_seqlens.npy is written. --grads also
 * writes the upstream gradients of vkla-run --backward: do.npy, and dht.npy for the causal
 * ops. */
#include "common.h"
#include "npy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int usage(void)
{
    fprintf(stderr, "usage: vkla-make-input OP [--B N] [--T N] [--H N] [--K N] [--V N] "
                    "[--gate none|g|g_gamma|gk] [--h0] [--grads] [--seqlens L1,L2,...] [--seed N]\n"
                    "       --out DIR\n");
    return 2;
}

static int write(const char *dir, const char *name, const float *x, int ndim, const int64_t *shape)
{
    char path[4096], err[256];
    snprintf(path, sizeof(path), "%s/%s.npy", dir, name);
    if (npy_write_f32(path, x, ndim, shape, err, sizeof(err)) != 0) {
        fprintf(stderr, "vkla-make-input: %s: %s\n", path, err);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    const tool_op *op = tool_find_op(argv[1]);
    if (!op) {
        fprintf(stderr, "vkla-make-input: %s: unknown op\n", argv[1]);
        return 2;
    }
    uint32_t B = 1, T = 256, H = 2, K = 64, V = 64, seed = 1;
    const char *gate = "g", *out = NULL, *seqlens = NULL;
    int h0 = 0, grads = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        uint32_t *dst = !strcmp(a, "--B") ? &B : !strcmp(a, "--T") ? &T : !strcmp(a, "--H") ? &H
                      : !strcmp(a, "--K") ? &K : !strcmp(a, "--V") ? &V : !strcmp(a, "--seed") ? &seed : NULL;
        if (dst) {
            if (!val || tool_parse_u32(val, dst) != 0 || (*dst == 0 && dst != &seed)) {
                fprintf(stderr, "vkla-make-input: %s: needs a positive integer\n", a);
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--gate") && val) {
            gate = argv[++i];
        } else if (!strcmp(a, "--out") && val) {
            out = argv[++i];
        } else if (!strcmp(a, "--seqlens") && val) {
            seqlens = argv[++i];
        } else if (!strcmp(a, "--h0")) {
            h0 = 1;
        } else if (!strcmp(a, "--grads")) {
            grads = 1;
        } else {
            fprintf(stderr, "vkla-make-input: %s: unknown or incomplete option\n", a);
            return 2;
        }
    }
    if (!out)
        return usage();
    int32_t cu[257];
    uint32_t nseq = 0;
    if (seqlens) {
        cu[0] = 0;
        for (const char *p = seqlens; *p && nseq < 256;) {
            char *end;
            long l = strtol(p, &end, 10);
            if (end == p || l < 0 || cu[nseq] + l > INT32_MAX / 2) {
                fprintf(stderr, "vkla-make-input: --seqlens: bad list '%s'\n", seqlens);
                return 2;
            }
            cu[nseq + 1] = cu[nseq] + (int32_t)l;
            nseq++;
            p = *end == ',' ? end + 1 : end;
        }
        B = 1;
        T = (uint32_t)cu[nseq];
        if (nseq == 0 || T == 0) {
            fprintf(stderr, "vkla-make-input: --seqlens: needs at least one token\n");
            return 2;
        }
    }
    tool_problem p;
    tool_err e = {0};
    if (tool_random_problem(op, B, T, H, K, V, gate, VKLA_DTYPE_F32, seed, &p, &e) != 0) {
        fprintf(stderr, "vkla-make-input: %s: %s\n", e.where, e.what);
        return 2;
    }
    uint32_t N = seqlens ? nseq : B;
    p.N = N;
    if (grads && tool_random_grads(op, &p, VKLA_DTYPE_F32, seed, &e) != 0) {
        fprintf(stderr, "vkla-make-input: %s: %s\n", e.where, e.what);
        tool_problem_free(&p);
        return 2;
    }
    if (mkdir(out, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "vkla-make-input: %s: %s\n", out, strerror(errno));
        return 2;
    }
    int rc = 0;
    for (int i = 0; i < TI_COUNT && rc == 0; i++) {
        if (i == TI_CU_SEQLENS || i == TI_H0 || !p.x[i])
            continue;
        int64_t shape[4];
        int nd = tool_input_shape(&p, i, shape);
        rc = write(out, tool_input_names[i], p.x[i], nd, shape);
    }
    if (rc == 0 && h0 && op->causal) {
        size_t n = (size_t)N * p.HV * K * V;
        float *s = malloc(n * sizeof(float));
        uint64_t x = seed * 0x9E3779B97F4A7C15ull + 7;
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            s[i] = (float)((double)(x >> 11) / 9007199254740992.0 - 0.5) * 0.2f;
        }
        int64_t shape[4] = {N, p.HV, K, V};
        rc = write(out, "h0", s, 4, shape);
        free(s);
    }
    if (rc == 0 && seqlens) {
        /* cu_seqlens as int32: written through the float writer would be wrong, so by hand */
        char path[4096];
        snprintf(path, sizeof(path), "%s/cu_seqlens.npy", out);
        FILE *f = fopen(path, "wb");
        char hdr[128];
        int n = snprintf(hdr, sizeof(hdr), "{'descr': '<i4', 'fortran_order': False, 'shape': (%u,), }", nseq + 1);
        int total = 10 + n + 1;
        int pad = (64 - total % 64) % 64;
        if (!f) {
            fprintf(stderr, "vkla-make-input: %s: %s\n", path, strerror(errno));
            rc = -1;
        } else {
            unsigned short hl = (unsigned short)(n + pad + 1);
            fwrite("\x93NUMPY\x01\x00", 1, 8, f);
            fputc(hl & 0xff, f);
            fputc(hl >> 8, f);
            fwrite(hdr, 1, (size_t)n, f);
            for (int i = 0; i < pad; i++)
                fputc(' ', f);
            fputc('\n', f);
            fwrite(cu, sizeof(int32_t), nseq + 1, f);
            if (fclose(f) != 0)
                rc = -1;
        }
    }
    tool_problem_free(&p);
    if (rc == 0)
        fprintf(stderr, "vkla-make-input: wrote %s inputs (B=%u T=%u H=%u K=%u V=%u gate=%s%s%s) to %s\n",
                op->name, B, T, H, K, V, gate, h0 ? " h0" : "", grads ? " do" : "", out);
    return rc == 0 ? 0 : 2;
}

/* Test harness: a validation-enabled context, deterministic random data, device tensors with
 * guard regions, and NMSE targets from SPEC.md. */
#ifndef VKLA_TEST_HARNESS_H
#define VKLA_TEST_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "vkla.h"
#include "vkla_ref.h"

/* The shared context of a test binary (validation on). */
vkla_context *th_ctx(void);
int th_setup(void **state);     /* group setup: creates the context */
int th_teardown(void **state);  /* group teardown: checks validation messages, destroys */
/* Fails the current test if any validation message arrived since the last call. */
void th_check_validation(void);

/* xorshift random numbers */
typedef struct th_rng { uint64_t s; } th_rng;
void th_seed(th_rng *r, uint64_t seed);
double th_uniform(th_rng *r, double lo, double hi);
double th_normal(th_rng *r);
void th_fill_uniform(th_rng *r, double *x, size_t n, double lo, double hi);
void th_fill_normal(th_rng *r, double *x, size_t n, double scale);
/* A case shape drawn at random (the draws in this order): B = 1 + floor(U(0, b_hi)),
 * T = floor(U(t_lo, t_hi)), H = 1 + floor(U(0, h_hi)), K and V in [1, 70], option bits in
 * [0, 3], normalize with probability 1/2, and any storage dtype. */
typedef struct th_shape {
    uint32_t B, T, H, K, V;
    int opts, normalize;
    vkla_dtype dt;
} th_shape;
th_shape th_draw_shape(th_rng *r, double b_hi, double t_lo, double t_hi, double h_hi);
/* normalize rows of length d to unit L2 norm */
void th_unit_rows(double *x, size_t rows, size_t d);

/* Round doubles through a storage dtype (what the device will see). */
void th_round(double *x, size_t n, vkla_dtype dt);

/* A device tensor with guard bytes before and after the data. */
#define TH_GUARD 256u
typedef struct th_tensor {
    vkla_buffer *buf;
    vkla_tensor t;
    uint64_t bytes; /* data bytes */
} th_tensor;

/* allocates, converts from double and uploads; data may be NULL (zero fill) */
void th_tensor_new(th_tensor *tt, vkla_dtype dt, uint32_t ndim, const uint64_t *shape,
                   const double *data);
/* downloads as float (converting from the storage dtype) and checks both guards */
void th_tensor_read(th_tensor *tt, float *out);
void th_tensor_free(th_tensor *tt);
size_t th_count(uint32_t ndim, const uint64_t *shape);

/* Views of n [1, T, 1, X] f32 tensors (rows[i]: T x X doubles) in one buffer whose tokens lie
 * `stride` floats apart (tensor i's row of token t at t * stride + i * X): one sequence of one
 * head then spans about T * stride * 4 bytes, e.g. beyond maxStorageBufferRange. views[i] gets
 * tensor i; returns the buffer (destroy it after the views). */
vkla_buffer *th_spread_views(uint32_t T, uint32_t X, uint64_t stride, int n,
                             const double *const *rows, vkla_tensor *views);

/* NMSE target for an output stored in dtype: f32 1e-9, else 10x the error of rounding the
 * reference once to the dtype (SPEC "Accuracy"). */
double th_target(const double *ref, size_t n, vkla_dtype dt);
/* Asserts nmse(ref, out) <= target, printing a useful message. */
void th_assert_close(const char *what, const double *ref, const float *out, size_t n,
                     double target);

#endif

/* Internal declarations shared by the host layer. Not installed. */
#ifndef VKLA_INTERNAL_H_
#define VKLA_INTERNAL_H_

#ifndef VK_NO_PROTOTYPES
#define VK_NO_PROTOTYPES
#endif
#include <volk.h>

#include "vkla.h"

#include <stdarg.h>
#include <stdbool.h>

/* Instance-level functions, loaded per context from its vkGetInstanceProcAddr. */
typedef struct vkla_instance_fns {
    PFN_vkGetInstanceProcAddr GetInstanceProcAddr;
    PFN_vkCreateInstance CreateInstance;
    PFN_vkEnumerateInstanceVersion EnumerateInstanceVersion;
    PFN_vkEnumerateInstanceLayerProperties EnumerateInstanceLayerProperties;
    PFN_vkEnumerateInstanceExtensionProperties EnumerateInstanceExtensionProperties;
    PFN_vkDestroyInstance DestroyInstance;
    PFN_vkEnumeratePhysicalDevices EnumeratePhysicalDevices;
    PFN_vkGetPhysicalDeviceProperties GetPhysicalDeviceProperties;
    PFN_vkGetPhysicalDeviceProperties2 GetPhysicalDeviceProperties2;
    PFN_vkGetPhysicalDeviceFeatures2 GetPhysicalDeviceFeatures2;
    PFN_vkGetPhysicalDeviceMemoryProperties GetPhysicalDeviceMemoryProperties;
    PFN_vkGetPhysicalDeviceQueueFamilyProperties GetPhysicalDeviceQueueFamilyProperties;
    PFN_vkEnumerateDeviceExtensionProperties EnumerateDeviceExtensionProperties;
    PFN_vkCreateDevice CreateDevice;
    PFN_vkGetDeviceProcAddr GetDeviceProcAddr;
    PFN_vkCreateDebugUtilsMessengerEXT CreateDebugUtilsMessengerEXT;
    PFN_vkDestroyDebugUtilsMessengerEXT DestroyDebugUtilsMessengerEXT;
} vkla_instance_fns;

/* Loads the global-level entry points (instance == NULL) or the instance ones. */
void vkla__load_instance_fns(vkla_instance_fns *f, PFN_vkGetInstanceProcAddr gipa,
                             VkInstance instance);
/* Fills a volk device table with this context's own vkGetDeviceProcAddr (no volk globals). */
void vkla__load_device_table(struct VolkDeviceTable *t, PFN_vkGetDeviceProcAddr gdpa,
                             VkDevice device);

/* Capabilities probed once per context. */
typedef struct vkla_caps {
    VkPhysicalDeviceProperties props;
    VkPhysicalDeviceMemoryProperties mem;
    uint32_t subgroup_size, subgroup_min, subgroup_max;
    bool subgroup_arith, subgroup_shuffle, subgroup_clustered, subgroup_ballot;
    bool size_control;          /* requiredSubgroupSize usable for compute */
    bool storage16;             /* storageBuffer16BitAccess enabled */
    bool float16, int8;
    bool push_descriptor;
    bool host_query_reset;
    bool bf16_arith, coopmat;
    uint32_t api_version;
    char driver_name[256], driver_info[256];
} vkla_caps;

/* Kernel variants chosen from the caps (env overrides force a path). */
typedef struct vkla_variants {
    bool subgroup;         /* reductions with subgroup ops instead of shared memory */
    uint32_t ks;           /* threads that split K in the recurrent kernels */
    bool flat;             /* straight-line ("flat") kernel forms where an op has them (CPU
                            * devices): fully unrolled, no reads inside loops or branches, and
                            * sequential chunk passes as one dispatch per chunk step */
    int scan_steps;        /* the delta rule's state pass as steps: 1 forced, 0 never, -1 by
                            * shape (flat and K > 96) */
} vkla_variants;

typedef struct vkla_pipeline {
    char name[64];
    uint32_t spec[16];
    uint32_t nspec;
    uint32_t nbindings;
    uint32_t required_subgroup;   /* 0 = any */
    VkPipeline pipeline;
    VkPipelineLayout layout;      /* borrowed from the context's layout cache */
    struct vkla_pipeline *next;
} vkla_pipeline;

#define VKLA_PUSH_BYTES 128
#define VKLA_MAX_BINDINGS 16

struct vkla_buffer {
    VkBuffer buffer;
    VkDeviceMemory memory;   /* VK_NULL_HANDLE for wrapped buffers */
    uint64_t base;           /* offset of vkla's part inside the VkBuffer */
    uint64_t size;
    void *mapped;            /* host pointer when host-visible */
    bool owned;
    bool coherent;
};

struct vkla_context {
    char err[1024];
    vkla_message_fn msg_fn;
    void *msg_user;
    bool external;
    void *loader;            /* dlopen handle (standalone) */
    vkla_instance_fns vki;
    struct VolkDeviceTable vk;
    VkInstance instance;
    VkPhysicalDevice phys;
    VkDevice device;
    uint32_t qfam;
    VkQueue queue;
    VkDebugUtilsMessengerEXT messenger;
    uint32_t validation_count;
    vkla_caps caps;
    vkla_variants var;

    VkCommandPool pool;      /* for run/upload; never used by the record path */
    VkCommandBuffer cmd;
    VkFence fence;
    VkPipelineCache cache;
    vkla_pipeline *pipelines;
    VkDescriptorSetLayout set_layouts[VKLA_MAX_BINDINGS + 1];
    VkPipelineLayout layouts[VKLA_MAX_BINDINGS + 1];

    vkla_buffer *dummy;      /* bound to absent optional tensors */
    vkla_buffer *scratch;    /* run-mode scratch, grown on demand */
    vkla_buffer *staging;    /* upload/download when device memory is not mappable */
    VkQueryPool timestamps;
    uint32_t timestamp_count;
    vkla_profile *profile;   /* vkla_context_profile: NULL = off */
    uint64_t scratch_limit;          /* vkla_context_set_scratch_limit: the bound in force */
    uint64_t scratch_limit_default;  /* 1 GiB or VKLA_MAX_SCRATCH at creation */
    struct vkla_prof_rec *prof; /* set only while vkla__bench records a profiled op */
};

/* The scratch bound of calls split along T when neither the app nor VKLA_MAX_SCRATCH sets one */
#define VKLA_DEFAULT_SCRATCH_LIMIT (1ull << 30)

/* Errors: set the context message and return the code. ctx may be NULL. */
vkla_result vkla__fail(vkla_context *ctx, vkla_result r, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
vkla_result vkla__vkfail(vkla_context *ctx, VkResult vr, const char *what);
void vkla__log(vkla_context *ctx, vkla_message_severity sev, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
const char *vkla__getenv(const char *name);

/* Memory */
vkla_result vkla__buffer_alloc(vkla_context *ctx, uint64_t size, bool host_visible,
                               vkla_buffer **out);
vkla_result vkla__ensure_scratch(vkla_context *ctx, uint64_t size);

/* Pipelines */
typedef struct vkla_spirv {
    const char *name;
    const uint32_t *code;
    const size_t *size;
} vkla_spirv;
const vkla_spirv *vkla__find_spirv(const char *name);
vkla_result vkla__get_pipeline(vkla_context *ctx, const char *name, const uint32_t *spec,
                               uint32_t nspec, uint32_t nbindings, uint32_t required_subgroup,
                               vkla_pipeline **out);
void vkla__destroy_pipelines(vkla_context *ctx);

/* Commands */
vkla_result vkla__begin_run(vkla_context *ctx, VkCommandBuffer *cmd);
vkla_result vkla__submit_wait(vkla_context *ctx);
void vkla__barrier(vkla_context *ctx, VkCommandBuffer cmd, VkPipelineStageFlags src,
                   VkAccessFlags src_access, VkPipelineStageFlags dst, VkAccessFlags dst_access);
void vkla__compute_barrier(vkla_context *ctx, VkCommandBuffer cmd);
vkla_result vkla__update_buffer(vkla_context *ctx, VkCommandBuffer cmd, vkla_buffer *buf,
                                uint64_t offset, const void *data, uint64_t size);

/* ------------------------------------------------------------------------------------------
 * Tensors, sequences and split dispatches (host/dispatch.c)
 * ---------------------------------------------------------------------------------------- */

/* How a tensor or scratch region's index space maps onto (sequence, head) work. */
typedef enum vkla_row_mode {
    VKLA_ROWS_TOKENS = 0,  /* [B,T,H,X]: rows of the sequences (batch or varlen tokens) */
    VKLA_ROWS_SEQS = 1,    /* [N,H,X]:   one row per sequence (states) */
    VKLA_ROWS_CHUNKS = 2,  /* [H,C,X]:   head-major, one row per chunk (scratch) */
    VKLA_ROWS_NONE = 3,    /* [H,X]:     per-head constants, or a whole small region */
    VKLA_ROWS_WHOLE = 4    /* bind the whole region as is (tables) */
} vkla_row_mode;

typedef struct vkla_bind {
    vkla_buffer *buf;      /* NULL = absent (the dummy buffer is bound) */
    uint64_t offset;       /* bytes from the start of buf */
    uint32_t esize;        /* element size */
    vkla_row_mode mode;
    uint64_t sb, st, sh;   /* element strides of rows (b or seq or chunk), tokens, heads */
    uint64_t inner;        /* elements per row-head (X) */
    uint64_t whole_bytes;  /* VKLA_ROWS_WHOLE */
    uint32_t head_div;     /* 0 or 1: split head h is head h; else head h / head_div (q/k of
                            * grouped value heads) */
} vkla_bind;

/* The sequences of one op call. */
typedef struct vkla_seqs {
    uint32_t n;            /* number of sequences */
    uint32_t B, T;         /* tensor dims */
    const int32_t *cu;     /* varlen offsets (host), or NULL */
    uint32_t chunk;        /* chunk size, 0 when the form does not chunk */
    uint64_t nchunks;      /* total chunks */
    uint32_t *chunk_off;   /* n+1 prefix of chunks per sequence (allocated) */
} vkla_seqs;

vkla_result vkla__seqs_init(vkla_context *ctx, vkla_seqs *s, uint32_t B, uint32_t T,
                            const int32_t *cu, uint32_t num_seqs, uint32_t chunk);
void vkla__seqs_free(vkla_seqs *s);
uint32_t vkla__seq_len(const vkla_seqs *s, uint32_t i);

/* One piece of a split dispatch: sequences [s0,s1) and heads [h0,h1). */
typedef struct vkla_split {
    uint32_t s0, s1, h0, h1;
} vkla_split;

/* A kernel launch over a split: grid x, and y = heads, z = seqs or chunks of the split. */
/* VKLA_GRID_SEQ_LANES: one lane per (sequence, head), heads fastest, grid_x lanes per
 * workgroup along x; four split words: h_begin, s_begin, s_end, h_end (ends exclusive). */
typedef enum vkla_grid_z {
    VKLA_GRID_SEQS = 0,
    VKLA_GRID_CHUNKS = 1,
    VKLA_GRID_SEQ_LANES = 2
} vkla_grid_z;

typedef struct vkla_launch {
    vkla_pipeline *pipe;
    uint32_t nbind;
    const vkla_bind *binds;
    uint32_t grid_x;
    vkla_grid_z grid_z;
    /* Push constants: the first words are filled by the op (params); the launcher writes the
     * split words (h_begin, s_begin, c_begin) and the per-binding element bases. */
    uint32_t push[VKLA_PUSH_BYTES / 4];
    uint32_t push_words;
    int base_word[VKLA_MAX_BINDINGS]; /* where binding i's base goes, -1 = nowhere */
    int split_word;                   /* h_begin, s_begin, c_begin at split_word..+2 */
    /* The launch site's model of this launch (all its pieces), for vkla_context_profile:
     * FLOPs and bytes moved (docs/bench.md, "Per-kernel breakdown"); 0 = not modelled. */
    double flops, bytes;
} vkla_launch;

/* Chunk statistics of a call's sequences for chunk size C: chunks, sum of chunk lengths
 * (tokens), of their squares and cubes (the terms of the FLOP models). */
typedef struct vkla_chunk_sums {
    double n, s1, s2, s3;
} vkla_chunk_sums;
vkla_chunk_sums vkla__chunk_sums(const vkla_seqs *s, uint32_t C);

/* Find splits so every binding window fits maxStorageBufferRange. */
vkla_result vkla__plan_splits(vkla_context *ctx, const vkla_seqs *s, uint32_t H,
                              const vkla_bind *binds, uint32_t nbind, vkla_split **out,
                              uint32_t *count);
vkla_result vkla__launch(vkla_context *ctx, VkCommandBuffer cmd, const vkla_seqs *s,
                         const vkla_split *sp, const vkla_launch *l);
/* vkla__launch over every piece of a split, with barriers between the pieces. */
vkla_result vkla__launch_splits(vkla_context *ctx, VkCommandBuffer cmd, const vkla_seqs *s,
                                const vkla_split *splits, uint32_t nsplit, const vkla_launch *l);

/* Checks a tensor view against an expected shape and dtype set, and its buffer bounds.
 * name is used in messages ("q"). want[i] == 0 means "any". */
vkla_result vkla__check_tensor(vkla_context *ctx, const char *op, const char *name,
                               const vkla_tensor *t, uint32_t ndim, const uint64_t *want,
                               uint32_t dtype_mask);
void vkla__tensor_strides(const vkla_tensor *t, uint64_t *strides);
/* Can kernels read (write) a checked tensor four elements at a time? Its last dimension must
 * be contiguous and a multiple of 4, its other strides multiples of 4, and every binding
 * window start 4-element aligned. */
bool vkla__vec4_view(const vkla_context *ctx, const vkla_tensor *t);
/* A vkla_bind for a [B,T,H,X] or [N,H,X] style tensor. */
vkla_bind vkla__bind_tensor(const vkla_tensor *t, vkla_row_mode mode);
vkla_bind vkla__bind_region(vkla_buffer *buf, uint64_t offset, uint32_t esize,
                            vkla_row_mode mode, uint64_t sb, uint64_t sh, uint64_t inner,
                            uint64_t whole_bytes);

uint64_t vkla__align_up(uint64_t x, uint64_t a);

/* Orders an op's work after earlier vkla work in the command buffer (shared scratch, and the
 * placeholder buffer bound to absent tensors): the first barrier every op records. */
void vkla__order_after_earlier(vkla_context *ctx, VkCommandBuffer cmd);
/* Varlen only (s->cu set; otherwise nothing): writes the sequence table (uvec4 per sequence:
 * first token, length, first chunk, 0) at off_seq and, when s was made with a chunk size, the
 * chunk table (uvec2 per chunk: sequence, first token within it) at off_chunk, with
 * vkCmdUpdateBuffer, then a transfer-to-compute barrier. The layout of shaders/common/seqs.glsl. */
vkla_result vkla__upload_seq_tables(vkla_context *ctx, VkCommandBuffer cmd, const vkla_seqs *s,
                                    vkla_buffer *buf, uint64_t off_seq, uint64_t off_chunk);
/* The bindings of those tables (left as they are without varlen; the chunk table only when s
 * was made with a chunk size). */
void vkla__bind_seq_tables(const vkla_seqs *s, vkla_buffer *buf, uint64_t off_seq,
                           uint64_t off_chunk, vkla_bind *seq, vkla_bind *chunk);

/* GPU timing of an op's own dispatches: records warmup+reps copies with timestamps. */
typedef vkla_result (*vkla_record_fn)(vkla_context *ctx, VkCommandBuffer cmd, const void *args);
vkla_result vkla__bench(vkla_context *ctx, vkla_record_fn rec, const void *args,
                        uint32_t warmup, uint32_t reps, double *times_us);

/* ------------------------------------------------------------------------------------------
 * Op plumbing (host/op.c)
 * ---------------------------------------------------------------------------------------- */

/* What an op family provides; the public run/record/scratch_size/bench calls are built on it. */
typedef struct vkla_op_impl {
    const char *name;
    /* validates args; the bytes of scratch the call needs */
    vkla_result (*scratch)(vkla_context *ctx, const void *args, uint64_t *bytes);
    /* records the op; run_mode lets it fall back to the context's own scratch */
    vkla_result (*record)(vkla_context *ctx, VkCommandBuffer cmd, const void *args, bool run_mode);
} vkla_op_impl;

vkla_result vkla__op_record(const vkla_op_impl *op, vkla_context *ctx, VkCommandBuffer cmd,
                            const void *args);
vkla_result vkla__op_run(const vkla_op_impl *op, vkla_context *ctx, const void *args);
vkla_result vkla__op_scratch_size(const vkla_op_impl *op, vkla_context *ctx, const void *args,
                                  uint64_t *bytes);
vkla_result vkla__op_bench(const vkla_op_impl *op, vkla_context *ctx, const void *args,
                           const vkla_buffer *args_scratch, uint32_t warmup, uint32_t reps,
                           double *times_us);

/* The scratch a call uses: the caller's (checked for size and alignment; start_align 0 = only
 * minStorageBufferOffsetAlignment) or, in run mode without one, the context's own. */
vkla_result vkla__resolve_scratch(vkla_context *ctx, const char *op, uint64_t need,
                                  vkla_buffer *buf, uint64_t offset, bool run_mode,
                                  uint64_t start_align, vkla_buffer **out, uint64_t *out_offset);

/* Strides 0 or packed (size-1 dimensions may carry any stride). */
bool vkla__tensor_contiguous(const vkla_tensor *t);
/* An optional f32 contiguous tensor of the given shape; sets flag in *flags when present. */
/* Whether two views may share bytes (same VkBuffer); exact for disjoint spans and for the
 * interleaved views of one fused [B,T,...] buffer, conservative otherwise. */
bool vkla__views_overlap(const vkla_tensor *a, const vkla_tensor *b);
vkla_result vkla__check_f32_opt(vkla_context *ctx, const char *op, const char *name,
                                const vkla_tensor *t, uint32_t ndim, const uint64_t *shape,
                                uint32_t flag, uint32_t *flags);

/* ------------------------------------------------------------------------------------------
 * Long sequences (host/tsplit.c): a call whose (sequence, head) slab exceeds
 * maxStorageBufferRange, or whose scratch would exceed the bound, runs as several calls of the
 * op on pieces of T, carrying the states between them.
 * ---------------------------------------------------------------------------------------- */

#define VKLA_TSPLIT_MAX_FIELDS 12

/* Where an op's args keep what the split needs (byte offsets into the args struct). Token
 * tensors are [B,T,...] views cut along T; row tensors [N,...] views cut along sequences. */
typedef struct vkla_tsplit_desc {
    const vkla_op_impl *one;               /* the op on one call (its checks, scratch, record) */
    uint32_t args_size;
    uint16_t tok[VKLA_TSPLIT_MAX_FIELDS];  /* token tensors; tok[0] is q */
    uint32_t ntok;
    uint32_t whole_tok;                    /* bit i: tok[i] is bound whole, not per head */
    uint16_t rows[VKLA_TSPLIT_MAX_FIELDS]; /* row tensors (states and their gradients) */
    uint32_t nrows;
    uint16_t fwd;                          /* the forward's args inside these args (0 = same) */
    /* in the forward's args */
    uint16_t cu, num_seqs, chunk_size;
    uint16_t s_in[2], s_out[2];            /* carried states: h0 -> ht, z0 -> zt */
    uint32_t nstate;
    uint16_t scratch, scratch_offset;      /* in these args */
    uint16_t fscratch, fscratch_offset;    /* in the forward's args */
    /* backward passes: the state gradients chained between pieces, and [X] f32 outputs summed
     * over the whole call (0 = none) */
    bool backward;
    uint16_t dht, dh0, sum;
    /* backward passes: the forward's state pass alone (forward args; o is not written) */
    const vkla_op_impl *states;
    /* the shape of carried state i after its row dimension (forward args); ndim 0 = none */
    void (*state_shape)(const void *fwd_args, uint32_t i, uint32_t *ndim, uint64_t *shape);
    /* optional: refuses calls that cannot be split (a message naming why) */
    vkla_result (*can_split)(vkla_context *ctx, const void *args);
} vkla_tsplit_desc;

/* The scratch and record functions of an op whose calls may run in pieces (vkla_op_impl). */
vkla_result vkla__tsplit_scratch(const vkla_tsplit_desc *d, vkla_context *ctx, const void *args,
                                 uint64_t *bytes);
vkla_result vkla__tsplit_record(const vkla_tsplit_desc *d, vkla_context *ctx, VkCommandBuffer cmd,
                                const void *args, bool run_mode);
/* Defines `impl`, the vkla_op_impl of an op named opname whose calls go through the split d. */
#define VKLA_TSPLIT_IMPL(impl, opname, d)                                                      \
    static vkla_result impl##_scratch(vkla_context *ctx, const void *args, uint64_t *bytes)   \
    {                                                                                          \
        return vkla__tsplit_scratch(&(d), ctx, args, bytes);                                   \
    }                                                                                          \
    static vkla_result impl##_record(vkla_context *ctx, VkCommandBuffer cmd, const void *args, \
                                     bool run_mode)                                            \
    {                                                                                          \
        return vkla__tsplit_record(&(d), ctx, cmd, args, run_mode);                            \
    }                                                                                          \
    static const vkla_op_impl impl = {opname, impl##_scratch, impl##_record}

#endif

// Quantizes the f32 tensors of one GGUF with ggml's own C quantizers, to the type
// each tensor has in a second GGUF of the same model (the preset choice is ours,
// the math is ggml's), times the quantize calls on N threads, and compares the
// bytes with the second file's. Prints one JSON object.
//
//   quantize-check F32.gguf QUANT.gguf [THREADS]
#define _FILE_OFFSET_BITS 64
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ggml.h"
#include "gguf.h"

#define MAX_TYPES GGML_TYPE_COUNT

struct type_stats {
    int64_t tensors, elements, bytes, blocks, mismatched_blocks;
    double quantize_s, quantize_cpu_s; // wall, and CPU of all threads
    char first_mismatch[256];
};

struct job {
    enum ggml_type type;
    const float *src;
    uint8_t *dst;
    int64_t row0, nrows, n_per_row;
};

static double clock_s(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
static double now(void) { return clock_s(CLOCK_MONOTONIC); }

static void die(const char *msg, const char *arg) {
    fprintf(stderr, "quantize-check: %s%s\n", msg, arg ? arg : "");
    exit(1);
}

static void read_at(FILE *f, uint64_t offset, void *buf, size_t n, const char *what) {
    if (fseeko(f, (off_t)offset, SEEK_SET) != 0 || fread(buf, 1, n, f) != n) die("short read in ", what);
}

static void *run_job(void *arg) {
    struct job *j = arg;
    if (j->nrows > 0)
        ggml_quantize_chunk(j->type, j->src, j->dst, j->row0 * j->n_per_row, j->nrows, j->n_per_row, NULL);
    return NULL;
}

// Quantizes nrows rows on `threads` threads, each a contiguous slice of rows.
static double quantize_rows(enum ggml_type type, const float *src, uint8_t *dst, int64_t nrows,
                            int64_t n_per_row, int threads) {
    pthread_t tid[64];
    struct job jobs[64];
    double t0 = now();
    for (int t = 0; t < threads; t++) {
        int64_t a = nrows * t / threads, b = nrows * (t + 1) / threads;
        jobs[t] = (struct job){type, src, dst, a, b - a, n_per_row};
        if (t > 0) pthread_create(&tid[t], NULL, run_job, &jobs[t]);
    }
    run_job(&jobs[0]);
    for (int t = 1; t < threads; t++) pthread_join(tid[t], NULL);
    return now() - t0;
}

int main(int argc, char **argv) {
    if (argc < 3) die("usage: quantize-check F32.gguf QUANT.gguf [THREADS]", NULL);
    int threads = argc > 3 ? atoi(argv[3]) : 1;
    if (threads < 1 || threads > 64) die("THREADS must be 1..64", NULL);
    double t_start = now();

    struct ggml_context *meta = NULL;
    struct gguf_context *src = gguf_init_from_file(argv[1], (struct gguf_init_params){true, &meta});
    struct gguf_context *ours = gguf_init_from_file(argv[2], (struct gguf_init_params){true, NULL});
    if (!src) die("cannot read ", argv[1]);
    if (!ours) die("cannot read ", argv[2]);
    FILE *fs = fopen(argv[1], "rb"), *fo = fopen(argv[2], "rb");
    if (!fs || !fo) die("cannot open inputs", NULL);
    size_t src_data = gguf_get_data_offset(src), our_data = gguf_get_data_offset(ours);

    static struct type_stats stats[MAX_TYPES];
    int64_t skipped = 0;
    for (int64_t i = 0; i < gguf_get_n_tensors(ours); i++) {
        const char *name = gguf_get_tensor_name(ours, i);
        enum ggml_type type = gguf_get_tensor_type(ours, i);
        int64_t si = gguf_find_tensor(src, name);
        if (si < 0) die("tensor missing from the f32 file: ", name);
        if (gguf_get_tensor_type(src, si) != GGML_TYPE_F32) die("source tensor is not f32: ", name);
        if (!ggml_is_quantized(type)) { skipped++; continue; }

        struct ggml_tensor *t = ggml_get_tensor(meta, name);
        int64_t n_per_row = t->ne[0], nelem = ggml_nelements(t), nrows = nelem / n_per_row;
        size_t nbytes = ggml_row_size(type, n_per_row) * nrows;
        if (nbytes != gguf_get_tensor_size(ours, i)) die("size differs from ggml's for ", name);

        float *x = malloc(nelem * sizeof(float));
        uint8_t *want = malloc(nbytes), *got = malloc(nbytes);
        if (!x || !want || !got) die("out of memory at ", name);
        read_at(fs, src_data + gguf_get_tensor_offset(src, si), x, nelem * sizeof(float), name);
        read_at(fo, our_data + gguf_get_tensor_offset(ours, i), want, nbytes, name);

        ggml_quantize_init(type);
        struct type_stats *s = &stats[type];
        double cpu0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        s->quantize_s += quantize_rows(type, x, got, nrows, n_per_row, threads);
        s->quantize_cpu_s += clock_s(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
        size_t block = ggml_type_size(type);
        for (size_t b = 0; b < nbytes / block; b++) {
            if (memcmp(got + b * block, want + b * block, block) == 0) continue;
            if (s->mismatched_blocks++ == 0)
                snprintf(s->first_mismatch, sizeof s->first_mismatch, "%s block %zu", name, b);
        }
        s->tensors++;
        s->elements += nelem;
        s->bytes += nbytes;
        s->blocks += nbytes / block;
        free(x); free(want); free(got);
    }

    int64_t mismatches = 0;
    printf("{\"threads\":%d,\"skipped_float_tensors\":%lld,\"types\":{", threads, (long long)skipped);
    int first = 1;
    for (int ty = 0; ty < MAX_TYPES; ty++) {
        struct type_stats *s = &stats[ty];
        if (!s->tensors) continue;
        mismatches += s->mismatched_blocks;
        printf("%s\"%s\":{\"tensors\":%lld,\"elements\":%lld,\"bytes_compared\":%lld,\"blocks\":%lld,"
               "\"mismatched_blocks\":%lld,\"first_mismatch\":%s%s%s,\"quantize_s\":%.3f,"
               "\"quantize_cpu_s\":%.3f,\"f32_MB_per_s_per_thread\":%.1f,\"f32_MB_per_cpu_s\":%.1f}",
               first ? "" : ",", ggml_type_name(ty), (long long)s->tensors, (long long)s->elements,
               (long long)s->bytes, (long long)s->blocks, (long long)s->mismatched_blocks,
               s->mismatched_blocks ? "\"" : "", s->mismatched_blocks ? s->first_mismatch : "null",
               s->mismatched_blocks ? "\"" : "", s->quantize_s, s->quantize_cpu_s,
               s->elements * 4e-6 / s->quantize_s / threads, s->elements * 4e-6 / s->quantize_cpu_s);
        first = 0;
    }
    double total_q = 0;
    for (int ty = 0; ty < MAX_TYPES; ty++) total_q += stats[ty].quantize_s;
    printf("},\"quantize_s\":%.3f,\"total_s\":%.3f,\"mismatched_blocks\":%lld}\n", total_q,
           now() - t_start, (long long)mismatches);
    fclose(fs); fclose(fo);
    gguf_free(src); gguf_free(ours); ggml_free(meta);
    return mismatches ? 2 : 0;
}

/*
 * ggml's own reference quantizers (quantize_row_*_ref in ggml-quants.c, what llama-quantize runs for
 * these types without an imatrix), driven from outside, for bench/ggml-native/compare.mts:
 *
 *   ggml-quantize time SAFETENSORS TYPE THREADS [F32_BYTES [OUT]]
 *       quantizes the f32 data of a one-file safetensors model (all tensors back to back, in 256-value
 *       blocks; the prefix of F32_BYTES only) on THREADS threads, prints JSON with the seconds of the
 *       quantizer alone (the source is paged in first), writes the blocks to OUT if given;
 *   ggml-quantize rows F32_FILE TYPE OUT
 *       raw f32 values in, the type's blocks out.
 *
 * TYPE: q2_k q3_k q4_k q5_k q6_k q8_0 q4_0. Link with ggml-quants.c of a ggml tree (build.sh).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include "ggml.h"
#include "ggml-quants.h"

/* ggml-quants.c refers to these (validation and error paths this driver never takes). */
void ggml_abort(const char *file, int line, const char *fmt, ...) { fprintf(stderr, "ggml_abort at %s:%d (%s)\n", file, line, fmt); abort(); }
size_t ggml_row_size(enum ggml_type type, int64_t n) { (void)type; (void)n; abort(); }
const char *ggml_type_name(enum ggml_type type) { (void)type; return "?"; }
size_t ggml_type_size(enum ggml_type type) { (void)type; abort(); }

typedef void (*row_quantizer)(const float *, void *, int64_t);
struct kind { const char *name; row_quantizer fn; size_t bytes_per_256; };

static int kind_of(const char *name, struct kind *k) {
  const struct kind kinds[] = {
    {"q2_k", (row_quantizer)quantize_row_q2_K_ref, sizeof(block_q2_K)},
    {"q3_k", (row_quantizer)quantize_row_q3_K_ref, sizeof(block_q3_K)},
    {"q4_k", (row_quantizer)quantize_row_q4_K_ref, sizeof(block_q4_K)},
    {"q5_k", (row_quantizer)quantize_row_q5_K_ref, sizeof(block_q5_K)},
    {"q6_k", (row_quantizer)quantize_row_q6_K_ref, sizeof(block_q6_K)},
    {"q8_0", (row_quantizer)quantize_row_q8_0_ref, 8 * sizeof(block_q8_0)},
    {"q4_0", (row_quantizer)quantize_row_q4_0_ref, 8 * sizeof(block_q4_0)},
  };
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) if (!strcmp(kinds[i].name, name)) { *k = kinds[i]; return 1; }
  fprintf(stderr, "unknown type %s\n", name);
  return 0;
}

struct part { row_quantizer fn; const float *x; uint8_t *y; int64_t blocks; };
static void *run_part(void *p) { struct part *s = p; s->fn(s->x, s->y, s->blocks * 256); return NULL; }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

static int write_all(const char *path, const uint8_t *y, size_t n) {
  FILE *o = fopen(path, "wb");
  if (!o || fwrite(y, 1, n, o) != n) { fprintf(stderr, "cannot write %s\n", path); return 0; }
  return fclose(o) == 0;
}

static int time_mode(int argc, char **argv) {
  struct kind k;
  if (argc < 5 || !kind_of(argv[3], &k)) return 2;
  int fd = open(argv[2], O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || st.st_size < 8) { fprintf(stderr, "cannot open %s\n", argv[2]); return 1; }
  const uint8_t *m = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
  uint64_t header;
  memcpy(&header, m, 8);
  const float *x = (const float *)(m + 8 + header);
  int64_t blocks = (st.st_size - 8 - (int64_t)header) / 1024;
  if (argc >= 6 && atoll(argv[5]) / 1024 < blocks) blocks = atoll(argv[5]) / 1024;
  int threads = atoi(argv[4]);
  if (threads < 1 || threads > 64) return 2;
  uint8_t *y = malloc(blocks * k.bytes_per_256);
  volatile float touch = 0;
  for (int64_t i = 0; i < blocks * 256; i += 1024) touch += x[i];
  pthread_t th[64];
  struct part parts[64];
  int64_t per = (blocks + threads - 1) / threads;
  double t0 = now();
  for (int i = 0; i < threads; i++) {
    int64_t b0 = i * per < blocks ? i * per : blocks, b1 = b0 + per < blocks ? b0 + per : blocks;
    parts[i] = (struct part){k.fn, x + b0 * 256, y + b0 * k.bytes_per_256, b1 - b0};
    pthread_create(&th[i], NULL, run_part, &parts[i]);
  }
  for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
  double seconds = now() - t0;
  printf("{\"type\":\"%s\",\"threads\":%d,\"f32_bytes\":%lld,\"seconds\":%.3f,\"MBps\":%.0f}\n", k.name, threads, (long long)(blocks * 1024), seconds, blocks * 1024 / seconds / 1e6);
  return argc >= 7 && !write_all(argv[6], y, blocks * k.bytes_per_256);
}

static int rows_mode(int argc, char **argv) {
  struct kind k;
  if (argc < 5 || !kind_of(argv[3], &k)) return 2;
  FILE *in = fopen(argv[2], "rb");
  if (!in) { fprintf(stderr, "cannot open %s\n", argv[2]); return 1; }
  fseek(in, 0, SEEK_END);
  int64_t n = ftell(in) / 4;
  fseek(in, 0, SEEK_SET);
  if (n % 256 != 0) { fprintf(stderr, "%s: %lld values, not whole 256-value blocks\n", argv[2], (long long)n); return 1; }
  float *x = malloc(n * 4);
  uint8_t *y = malloc(n / 256 * k.bytes_per_256);
  if ((int64_t)fread(x, 4, n, in) != n) return 1;
  k.fn(x, y, n);
  return !write_all(argv[4], y, n / 256 * k.bytes_per_256);
}

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "time")) return time_mode(argc, argv);
  if (argc >= 2 && !strcmp(argv[1], "rows")) return rows_mode(argc, argv);
  fprintf(stderr, "usage: ggml-quantize time SAFETENSORS TYPE THREADS [F32_BYTES [OUT]] | rows F32_FILE TYPE OUT\n");
  return 2;
}

/*
 * isal_bench: Reed-Solomon throughput of Intel ISA-L, as a reference point for
 * `cairnctl bench codec`. It measures encode and reconstruct speed for one
 * RS(K+M) geometry and one extent size, and prints one JSON line per ISA-L
 * implementation. This is a benchmark peer only; Cairn never links ISA-L.
 *
 * Build: cc -O2 -o isal_bench isal_bench.c -lisal
 * Usage: isal_bench K M EXTENT_BYTES MIN_SECONDS
 *
 * Throughput is (K * shardBytes * calls) / seconds / 1e6, i.e. decimal MB of
 * extent data (padded to K * ceil(EXTENT_BYTES / K)) processed per second.
 */
#define _POSIX_C_SOURCE 200112L

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <isa-l/erasure_code.h>

typedef void (*EncodeFn)(int len, int k, int rows, unsigned char *gfTables,
                         unsigned char **sources, unsigned char **outputs);

struct Impl {
    const char *name;
    EncodeFn encode;
};

/*
 * ec_encode_data is ISA-L's runtime dispatcher, so it picks the best kernel
 * for this CPU (AVX-512 where available). ec_encode_data_avx2 pins the AVX2
 * kernel, which is what a portable build of our own codec competes with. The
 * header only declares it on x86, so elsewhere we report the dispatcher alone.
 */
static const struct Impl impls[] = {
    {"isa-l", ec_encode_data},
#if defined(__x86_64__) || defined(__i386__)
    {"isa-l-avx2", ec_encode_data_avx2},
#endif
};

static void usageError(const char *message)
{
    fprintf(stderr, "isal_bench: %s (usage: isal_bench K M EXTENT_BYTES MIN_SECONDS)\n",
            message);
    exit(2);
}

static void fatal(const char *message)
{
    fprintf(stderr, "isal_bench: %s\n", message);
    exit(1);
}

/* Parses a whole decimal integer argument, rejecting trailing junk and overflow. */
static long long parseInteger(const char *text, const char *what)
{
    char *end = NULL;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0') {
        char message[128];
        snprintf(message, sizeof message, "%s must be an integer, got '%s'", what, text);
        usageError(message);
    }
    return value;
}

static void *alignedAlloc(size_t sizeBytes)
{
    void *block = NULL;
    if (posix_memalign(&block, 64, sizeBytes) != 0) {
        fatal("out of memory");
    }
    return block;
}

static double nowSeconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Calls the kernel repeatedly until at least minSeconds have passed and
 * returns MB/s over the K data shards. One untimed call first resolves the
 * dispatcher and faults in the output pages so they do not skew the result.
 */
static double timeEncode(EncodeFn encode, int shardBytes, int k, int rows,
                         unsigned char *gfTables, unsigned char **sources,
                         unsigned char **outputs, double minSeconds)
{
    encode(shardBytes, k, rows, gfTables, sources, outputs);
    long long calls = 0;
    double start = nowSeconds();
    double elapsedSeconds = 0.0;
    do {
        encode(shardBytes, k, rows, gfTables, sources, outputs);
        calls++;
        elapsedSeconds = nowSeconds() - start;
    } while (elapsedSeconds < minSeconds);
    return (double)k * (double)shardBytes * (double)calls / elapsedSeconds / 1e6;
}

/*
 * Builds the (K+M) x K encode matrix, systematic (identity on top). We prefer
 * ISA-L's Vandermonde-derived matrix, but it is not invertible for every
 * geometry and erasure pattern, so when the survivor sub-matrix we will use is
 * singular we fall back to the Cauchy matrix. Speed does not depend on which
 * coefficients are used, only on their count.
 */
static void buildMatrices(int k, int m, int lostCount, unsigned char *encodeMatrix,
                          unsigned char *decodeMatrix)
{
    unsigned char *survivorMatrix = malloc((size_t)k * k);
    unsigned char *inverse = malloc((size_t)k * k);
    if (survivorMatrix == NULL || inverse == NULL) {
        fatal("out of memory");
    }

    for (int attempt = 0; attempt < 2; attempt++) {
        if (attempt == 0) {
            gf_gen_rs_matrix(encodeMatrix, k + m, k);
        } else {
            gf_gen_cauchy1_matrix(encodeMatrix, k + m, k);
        }
        if (lostCount == 0) {
            break;
        }
        /*
         * Data shards 0..lostCount-1 are lost; the survivors are the remaining
         * data shards followed by the first lostCount parity shards, which is
         * exactly rows lostCount..lostCount+K-1 of the encode matrix.
         */
        memcpy(survivorMatrix, encodeMatrix + (size_t)lostCount * k, (size_t)k * k);
        if (gf_invert_matrix(survivorMatrix, inverse, k) == 0) {
            /* Row i of the inverse regenerates data shard i from the survivors. */
            memcpy(decodeMatrix, inverse, (size_t)lostCount * k);
            free(survivorMatrix);
            free(inverse);
            return;
        }
        if (attempt == 0) {
            fprintf(stderr, "isal_bench: note: RS matrix singular for this erasure "
                            "pattern, using Cauchy matrix\n");
        }
    }
    free(survivorMatrix);
    free(inverse);
    if (lostCount != 0) {
        fatal("encode matrix is singular for the chosen erasure pattern");
    }
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        usageError("expected 4 arguments");
    }
    long long kArg = parseInteger(argv[1], "K");
    long long mArg = parseInteger(argv[2], "M");
    long long extentArg = parseInteger(argv[3], "EXTENT_BYTES");
    char *end = NULL;
    double minSeconds = strtod(argv[4], &end);
    if (end == argv[4] || *end != '\0' || !isfinite(minSeconds) || minSeconds <= 0.0 ||
        minSeconds > 3600.0) {
        usageError("MIN_SECONDS must be a number in (0, 3600]");
    }
    if (kArg < 1) {
        usageError("K must be >= 1");
    }
    if (mArg < 0) {
        usageError("M must be >= 0");
    }
    if (kArg + mArg > 255) {
        usageError("K + M must be <= 255");
    }
    if (extentArg < 1) {
        usageError("EXTENT_BYTES must be >= 1");
    }
    /* ISA-L takes the shard length as an int. */
    long long shardArg = (extentArg + kArg - 1) / kArg;
    if (shardArg > INT_MAX) {
        usageError("EXTENT_BYTES / K is too large for ISA-L (shard must fit in an int)");
    }

    const int k = (int)kArg;
    const int m = (int)mArg;
    const int shardBytes = (int)shardArg;
    /*
     * With M <= K we lose data shards 0..M-1. With M > K there are only K data
     * shards to lose, so we lose all of them and rebuild from K parity shards.
     */
    const int lostCount = m < k ? m : k;

    unsigned char *encodeMatrix = malloc((size_t)(k + m) * k);
    unsigned char *decodeMatrix = malloc((size_t)(lostCount > 0 ? lostCount : 1) * k);
    unsigned char *encodeTables = malloc((size_t)32 * k * (m > 0 ? m : 1));
    unsigned char *decodeTables = malloc((size_t)32 * k * (lostCount > 0 ? lostCount : 1));
    unsigned char **shards = malloc(sizeof(unsigned char *) * (size_t)(k + m));
    unsigned char **referenceParity = malloc(sizeof(unsigned char *) * (size_t)(m > 0 ? m : 1));
    unsigned char **survivors = malloc(sizeof(unsigned char *) * (size_t)k);
    unsigned char **rebuilt = malloc(sizeof(unsigned char *) * (size_t)(lostCount > 0 ? lostCount : 1));
    if (encodeMatrix == NULL || decodeMatrix == NULL || encodeTables == NULL ||
        decodeTables == NULL || shards == NULL || referenceParity == NULL ||
        survivors == NULL || rebuilt == NULL) {
        fatal("out of memory");
    }

    for (int i = 0; i < k + m; i++) {
        shards[i] = alignedAlloc((size_t)shardBytes);
    }
    for (int i = 0; i < m; i++) {
        referenceParity[i] = alignedAlloc((size_t)shardBytes);
    }
    for (int i = 0; i < lostCount; i++) {
        rebuilt[i] = alignedAlloc((size_t)shardBytes);
    }

    /* A fixed-seed xorshift64* stream, so runs are repeatable but not compressible. */
    uint64_t state = 0x9E3779B97F4A7C15ULL;
    for (int i = 0; i < k; i++) {
        for (int j = 0; j < shardBytes; j++) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            shards[i][j] = (unsigned char)((state * 0x2545F4914F6CDD1DULL) >> 56);
        }
    }

    buildMatrices(k, m, lostCount, encodeMatrix, decodeMatrix);
    /* Only the parity rows (below the identity) are needed to encode. */
    if (m > 0) {
        ec_init_tables(k, m, encodeMatrix + (size_t)k * k, encodeTables);
        ec_encode_data_base(shardBytes, k, m, encodeTables, shards, referenceParity);
    }
    if (lostCount > 0) {
        ec_init_tables(k, lostCount, decodeMatrix, decodeTables);
    }
    for (int i = 0; i < k; i++) {
        survivors[i] = shards[lostCount + i];
    }

    for (size_t implIndex = 0; implIndex < sizeof impls / sizeof impls[0]; implIndex++) {
        const struct Impl *impl = &impls[implIndex];

        /*
         * With M = 0 there is no parity, so the kernel returns immediately and
         * this figure is call overhead only; it is reported so the line shape
         * stays the same.
         */
        double encodeMBps = timeEncode(impl->encode, shardBytes, k, m, encodeTables, shards,
                                       shards + k, minSeconds);
        for (int i = 0; i < m; i++) {
            if (memcmp(shards[k + i], referenceParity[i], (size_t)shardBytes) != 0) {
                fprintf(stderr, "isal_bench: %s: parity shard %d differs from the "
                                "baseline encoder\n", impl->name, i);
                return 1;
            }
        }

        if (lostCount == 0) {
            printf("{\"impl\":\"%s\",\"k\":%d,\"m\":%d,\"extentBytes\":%lld,"
                   "\"encodeMBps\":%.1f,\"reconstructMBps\":null}\n",
                   impl->name, k, m, extentArg, encodeMBps);
            fflush(stdout);
            continue;
        }

        for (int i = 0; i < lostCount; i++) {
            memset(rebuilt[i], 0, (size_t)shardBytes);
        }
        double reconstructMBps = timeEncode(impl->encode, shardBytes, k, lostCount,
                                            decodeTables, survivors, rebuilt, minSeconds);
        for (int i = 0; i < lostCount; i++) {
            if (memcmp(rebuilt[i], shards[i], (size_t)shardBytes) != 0) {
                fprintf(stderr, "isal_bench: %s: reconstructed data shard %d does not "
                                "match the original\n", impl->name, i);
                return 1;
            }
        }
        printf("{\"impl\":\"%s\",\"k\":%d,\"m\":%d,\"extentBytes\":%lld,"
               "\"encodeMBps\":%.1f,\"reconstructMBps\":%.1f}\n",
               impl->name, k, m, extentArg, encodeMBps, reconstructMBps);
        fflush(stdout);
    }
    return 0;
}

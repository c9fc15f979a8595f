// GELU forward and backward, and attention's softmax rows (see include/activations.h): plain
// loops the compiler vectorises, cloned per instruction set.
#include "activations.h"
#include <stdint.h>
#include <math.h>
#include <string.h>

#include "cloned.h"

// Each multiply and add rounds on its own, as in the Swift code these loops replace.
#pragma clang fp contract(off)

#define INVERSE_SQRT_2 0.70710678118654752f
#define INVERSE_SQRT_2PI 0.39894228040143268f

// e^x: x = n·ln2 + r, |r| ≤ ln2/2, e^r a degree-6 polynomial (Cephes expf), 2^n built in the
// exponent bits; n is rounded by adding and subtracting 1.5·2²³ (VectorMath.exp).
static inline __attribute__((always_inline)) float vector_exp(float x) {
    const float lowest = -87.33654f, highest = 88.72283f, shifter = 12582912.0f;
    float clamped = x < lowest ? lowest : (x > highest ? highest : x);
    float shifted = clamped * 1.44269504088896341f + shifter;
    float n = shifted - shifter;
    float r = clamped - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float er = p * (r * r) + r + 1;
    uint32_t bits;
    memcpy(&bits, &shifted, 4);
    bits = (bits - 0x4B400000u + 127u) << 23;
    float two_to_n;
    memcpy(&two_to_n, &bits, 4);
    return x < lowest ? 0 : er * two_to_n;
}

// erf(x) = x·P(x²)/Q(x²) on [−4, 4], ±1 outside (VectorMath.erf).
static inline __attribute__((always_inline)) float vector_erf(float x) {
    float c = x < -4 ? -4 : (x > 4 ? 4 : x);
    float x2 = c * c;
    float p = -2.72614225801306e-10f;
    p = p * x2 + 2.77068142495902e-08f;
    p = p * x2 - 2.10102402082508e-06f;
    p = p * x2 - 5.69250639462346e-05f;
    p = p * x2 - 7.34990630326855e-04f;
    p = p * x2 - 2.95459980854025e-03f;
    p = p * x2 - 1.60960333262415e-02f;
    float q = -1.45660718464996e-05f;
    q = q * x2 - 2.13374055278905e-04f;
    q = q * x2 - 1.68282697438203e-03f;
    q = q * x2 - 7.37332916720468e-03f;
    q = q * x2 - 1.42647390514189e-02f;
    return c * p / q;
}

CLONED void kaleido_gelu_forward(float *output, const float *input, long count) {
    EACH_ELEMENT
    for (long i = 0; i < count; i++) {
        float x = input[i];
        output[i] = 0.5f * x * (1 + vector_erf(x * INVERSE_SQRT_2));
    }
}

CLONED void kaleido_gelu_backward(float *d_input, const float *d_output, const float *input, long count) {
    EACH_ELEMENT
    for (long i = 0; i < count; i++) {
        float x = input[i];
        float cdf = 0.5f * (1 + vector_erf(x * INVERSE_SQRT_2));
        float density = vector_exp(-0.5f * x * x) * INVERSE_SQRT_2PI;
        d_input[i] = d_output[i] * (cdf + x * density);
    }
}

// One set and head's attention scores: S += bias + mask, then softmax along each row. The row
// maximum is found in sixteen lanes (max is exact in any order), the exponentials summed in
// eight interleaved partial sums and then in lane order, as `Softmax.exponentiate` does.
CLONED void kaleido_attention_softmax(float *scores, int rows, const float *bias, const float *mask) {
    long count = (long)rows * rows;
    if (bias && mask)
        for (long i = 0; i < count; i++) scores[i] += bias[i] + mask[i];
    else if (bias)
        for (long i = 0; i < count; i++) scores[i] += bias[i];
    else if (mask)
        for (long i = 0; i < count; i++) scores[i] += mask[i];
    for (int r = 0; r < rows; r++) {
        float *row = scores + (long)r * rows;
        float lanes[16];
        for (int k = 0; k < 16; k++) lanes[k] = -INFINITY;
        int j = 0;
        for (; j + 16 <= rows; j += 16)
            for (int k = 0; k < 16; k++) lanes[k] = row[j + k] > lanes[k] ? row[j + k] : lanes[k];
        float maximum = -INFINITY;
        for (int k = 0; k < 16; k++) maximum = lanes[k] > maximum ? lanes[k] : maximum;
        for (; j < rows; j++) maximum = row[j] > maximum ? row[j] : maximum;
        if (maximum == -INFINITY) {  // a fully masked row
            memset(row, 0, sizeof(float) * (size_t)rows);
            continue;
        }
        for (j = 0; j < rows; j++) row[j] = vector_exp(row[j] - maximum);
        float sums[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (j = 0; j + 8 <= rows; j += 8)
            for (int k = 0; k < 8; k++) sums[k] += row[j + k];
        float sum = 0;
        for (int k = 0; k < 8; k++) sum += sums[k];
        for (; j < rows; j++) sum += row[j];
        float inverse = 1 / sum;
        for (j = 0; j < rows; j++) row[j] *= inverse;
    }
}

// Element-wise loops that may run in place (see include/elementwise.h), cloned per instruction set.
#include "elementwise.h"

#include "cloned.h"

#pragma clang fp contract(off)

CLONED void kaleido_add(float *output, const float *a, const float *b, long count, int relu) {
    if (relu) {
        EACH_ELEMENT
        for (long i = 0; i < count; i++) {
            float sum = a[i] + b[i];
            output[i] = sum <= 0 ? 0 : sum;
        }
    } else {
        EACH_ELEMENT
        for (long i = 0; i < count; i++) output[i] = a[i] + b[i];
    }
}

CLONED void kaleido_relu(float *output, const float *input, long count) {
    EACH_ELEMENT
    for (long i = 0; i < count; i++) output[i] = input[i] <= 0 ? 0 : input[i];
}

CLONED void kaleido_relu_backward(float *d_input, const float *d_output, const float *input, long count) {
    EACH_ELEMENT
    for (long i = 0; i < count; i++) d_input[i] = input[i] > 0 ? d_output[i] : 0;
}

CLONED void kaleido_scale_channels(float *output, const float *input, const float *scale, long rows, long channels) {
    for (long m = 0; m < rows; m++) {
        float *out = output + m * channels;
        const float *x = input + m * channels;
        EACH_ELEMENT
        for (long c = 0; c < channels; c++) out[c] = x[c] * scale[c];
    }
}

CLONED void kaleido_scale_add(float *output, const float *input, float factor, long count, int accumulate) {
    if (accumulate) {
        EACH_ELEMENT
        for (long i = 0; i < count; i++) output[i] = output[i] + input[i] * factor;
    } else {
        EACH_ELEMENT
        for (long i = 0; i < count; i++) output[i] = 0 + input[i] * factor;
    }
}

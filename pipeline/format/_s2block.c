/*
 * pipeline.format._s2block: the S2 / Snappy block decoder in C, an optional accelerator for pipeline/format/s2.py.
 *
 * decode_block(src, max_size=4194304) -> bytes
 *
 * It follows pipeline.format.s2.decode_block_py (the reference) step by step: the same checks in the same order, and
 * ValueError with the same reason strings, so the two can be compared on any input. The format is described in
 * pipeline/format/s2.py. The GIL is released while a block decodes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_BLOCK_SIZE (4u << 20)

static const char E_HEADER[] = "bad block header";
static const char E_TOO_LARGE[] = "block too large";
static const char E_TAG[] = "truncated tag";
static const char E_LITERAL[] = "literal overruns";
static const char E_OFFSET[] = "bad copy offset";
static const char E_COPY[] = "copy overruns";
static const char E_LENGTH[] = "length mismatch";

/* The uvarint block header: 0 and the value in *value, *size; or an error reason. */
static const char *block_length(const uint8_t *src, uint64_t n, uint64_t *value, uint64_t *size)
{
    uint64_t v = 0;
    unsigned shift = 0;
    int big = 0;
    uint64_t i;
    for (i = 0; i < n && i < 10; i++) {
        uint8_t b = src[i];
        if (shift > 28 && (b & 0x7f)) {
            big = 1; /* bits at 2^35 and above: certainly more than 32 bits */
        } else {
            v |= (uint64_t)(b & 0x7f) << shift;
        }
        if (b < 0x80) {
            if (big || v > 0xffffffffu) {
                return E_HEADER;
            }
            *value = v;
            *size = i + 1;
            return NULL;
        }
        shift += 7;
    }
    return E_HEADER;
}

/* A copy of `length` bytes from `offset` bytes back; offset <= d and length <= room were checked. */
static inline void copy_back(uint8_t *op, uint64_t offset, uint64_t length)
{
    const uint8_t *ip = op - offset;
    if (offset >= length) {
        memcpy(op, ip, (size_t)length);
        return;
    }
    if (offset == 1) {
        memset(op, *ip, (size_t)length);
        return;
    }
    /* Overlapping: the last `offset` bytes repeat. Copy one period, then double what is there. */
    memcpy(op, ip, (size_t)offset);
    uint64_t have = offset;
    while (have < length) {
        uint64_t c = have;
        if (c > length - have) {
            c = length - have;
        }
        memcpy(op + have, op, (size_t)c);
        have += c;
    }
}

static const char *decode(uint8_t *dst, uint64_t dlen, const uint8_t *src, uint64_t n, uint64_t s)
{
    uint64_t d = 0, offset = 0, length;
    while (s < n) {
        uint8_t tag = src[s];
        switch (tag & 0x03) {
        case 0: { /* literal */
            uint64_t x = tag >> 2;
            if (x < 60) {
                s += 1;
            } else {
                uint64_t extra = x - 59, i;
                if (s + 1 + extra > n) {
                    return E_TAG;
                }
                x = 0;
                for (i = 0; i < extra; i++) {
                    x |= (uint64_t)src[s + 1 + i] << (8 * i);
                }
                s += 1 + extra;
            }
            length = x + 1;
            if (length > dlen - d || length > n - s) {
                return E_LITERAL;
            }
            memcpy(dst + d, src + s, (size_t)length);
            s += length;
            d += length;
            continue;
        }
        case 1: { /* copy1; offset 0: S2 repeat of the previous offset */
            uint64_t toffset;
            if (s + 2 > n) {
                return E_TAG;
            }
            length = (tag >> 2) & 0x07;
            toffset = ((uint64_t)(tag & 0xe0) << 3) | src[s + 1];
            s += 2;
            if (toffset == 0) {
                if (length == 5) {
                    if (s + 1 > n) {
                        return E_TAG;
                    }
                    length = (uint64_t)src[s] + 4;
                    s += 1;
                } else if (length == 6) {
                    if (s + 2 > n) {
                        return E_TAG;
                    }
                    length = ((uint64_t)src[s] | (uint64_t)src[s + 1] << 8) + (1u << 8);
                    s += 2;
                } else if (length == 7) {
                    if (s + 3 > n) {
                        return E_TAG;
                    }
                    length = ((uint64_t)src[s] | (uint64_t)src[s + 1] << 8 | (uint64_t)src[s + 2] << 16) + (1u << 16);
                    s += 3;
                }
            } else {
                offset = toffset;
            }
            length += 4;
            break;
        }
        case 2: /* copy2 */
            if (s + 3 > n) {
                return E_TAG;
            }
            offset = (uint64_t)src[s + 1] | (uint64_t)src[s + 2] << 8;
            length = 1 + (uint64_t)(tag >> 2);
            s += 3;
            break;
        default: /* copy4 */
            if (s + 5 > n) {
                return E_TAG;
            }
            offset = (uint64_t)src[s + 1] | (uint64_t)src[s + 2] << 8 | (uint64_t)src[s + 3] << 16 |
                     (uint64_t)src[s + 4] << 24;
            length = 1 + (uint64_t)(tag >> 2);
            s += 5;
            break;
        }
        if (offset == 0 || offset > d) {
            return E_OFFSET;
        }
        if (length > dlen - d) {
            return E_COPY;
        }
        copy_back(dst + d, offset, length);
        d += length;
    }
    if (d != dlen) {
        return E_LENGTH;
    }
    return NULL;
}

static PyObject *decode_block(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t max_size = MAX_BLOCK_SIZE;
    uint64_t dlen = 0, hsize = 0;
    const char *err;
    PyObject *out;
    (void)self;

    if (!PyArg_ParseTuple(args, "y*|n:decode_block", &view, &max_size)) {
        return NULL;
    }
    err = block_length((const uint8_t *)view.buf, (uint64_t)view.len, &dlen, &hsize);
    if (err == NULL && (max_size < 0 || dlen > (uint64_t)max_size)) {
        err = E_TOO_LARGE;
    }
    if (err != NULL) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, err);
        return NULL;
    }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)dlen);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    err = decode((uint8_t *)PyBytes_AS_STRING(out), dlen, (const uint8_t *)view.buf, (uint64_t)view.len, hsize);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (err != NULL) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_ValueError, err);
        return NULL;
    }
    return out;
}

static PyMethodDef methods[] = {
    {"decode_block", decode_block, METH_VARARGS,
     "decode_block(src, max_size=4194304) -> bytes\n\n"
     "Decode one S2 or Snappy block (uvarint length header, then tags). ValueError if it is corrupt or declares\n"
     "more than max_size bytes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_s2block", "The S2 block decoder in C (accelerator for pipeline.format.s2).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__s2block(void)
{
    return PyModule_Create(&module);
}

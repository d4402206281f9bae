/*
 * pipeline.format._natsarc: the NATSARC1 message walk in C, an optional accelerator for pipeline.format.natsarc.count_archive.
 *
 * walk(buffer, pos, last_seq, base=0) -> (pos, count, first_seq, last_seq, status, need)
 *
 * From buffer[pos], an entry boundary, it steps over complete message entries without touching their names or
 * payloads, and stops at
 *   "more"  an entry that does not fit in the buffer; pos is its start, need the bytes it takes from there (0 if
 *           its header is not complete yet, so its size is unknown);
 *   "meta"  an entry without a sequence (state.json, consumers/<name>, ...) whose header is complete and checked;
 *           pos is its start: the caller reads it;
 *   "end"   the end marker; pos is just after it, which must be the end of the buffer.
 * count, first_seq and last_seq describe the messages stepped over (first_seq 0 if none; last_seq is the
 * last_seq passed in then).
 *
 * It makes the checks of pipeline.format.natsarc._raw_entries (the reference) in the same order, and raises ValueError
 * with the same message text, offsets being base + the offset in buffer; the caller turns it into ArchiveError.
 * Input is untrusted: every varint read stays inside the buffer, and sizes are compared before they are added to
 * an offset. The GIL is released during the walk.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Limits shared with pipeline/format/natsarc.py (MAX_NAME, MAX_ENTRY). */
#define MAX_NAME (UINT64_C(1) << 20)
#define MAX_ENTRY (UINT64_C(1) << 30)

enum { VARINT_OK, VARINT_SHORT, VARINT_BAD };

enum {
    ST_MORE,
    ST_META,
    ST_END,
    ER_VARINT,
    ER_NO_NAME,
    ER_AFTER_END,
    ER_SIZES,
    ER_ORDER,
};

/*
 * A uvarint from at most `avail` bytes at p. As in Go's binary.Uvarint (and natsarc._uvarint): at most 10 bytes,
 * the 10th may only be 0 or 1 (bit 63). VARINT_SHORT: no terminator in fewer than 10 available bytes (more input
 * may complete it).
 */
static int uvarint(const uint8_t *p, size_t avail, uint64_t *value, size_t *len)
{
    uint64_t v = 0;
    size_t i, n = avail < 10 ? avail : 10;
    for (i = 0; i < n; i++) {
        uint8_t b = p[i];
        if (i == 9) {
            if (b > 1) {
                return VARINT_BAD;
            }
            *value = v | (uint64_t)b << 63;
            *len = 10;
            return VARINT_OK;
        }
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (b < 0x80) {
            *value = v;
            *len = i + 1;
            return VARINT_OK;
        }
    }
    return VARINT_SHORT;
}

typedef struct {
    size_t pos;    /* in: where to start; out: where the walk stopped (or the offset an error names) */
    uint64_t last; /* in: the last message sequence before pos; out: the last one stepped over */
    uint64_t count, first;
    size_t need;
    int status;
    uint64_t a, b, c; /* error details */
} walk_state;

static void walk_entries(const uint8_t *buf, size_t n, walk_state *w)
{
    size_t p = w->pos;
    uint64_t last = w->last, count = 0, first = 0;
    for (;;) {
        size_t at = p, len = 0;
        uint64_t f[5]; /* name length, zig-zag timestamp, sequence, header size, payload size */
        uint64_t body;
        int k;
        for (k = 0; k < 5; k++) {
            int r = uvarint(buf + p, n - p, &f[k], &len);
            if (r == VARINT_SHORT) {
                w->status = ST_MORE;
                w->pos = at;
                w->need = 0;
                goto done;
            }
            if (r == VARINT_BAD) {
                w->status = ER_VARINT;
                w->pos = p;
                goto done;
            }
            p += len; /* len <= n - p */
        }
        if (f[0] == 0) {
            if (f[1] | f[2] | f[3] | f[4]) {
                w->status = ER_NO_NAME;
                w->pos = at;
            } else if (p < n) {
                w->status = ER_AFTER_END;
                w->pos = p;
            } else {
                w->status = ST_END;
                w->pos = p;
            }
            goto done;
        }
        /* each size alone first, so that their sum cannot wrap */
        if (f[0] > MAX_NAME || f[3] > MAX_ENTRY || f[4] > MAX_ENTRY || f[3] + f[4] > MAX_ENTRY) {
            w->status = ER_SIZES;
            w->pos = at;
            w->a = f[0];
            w->b = f[3];
            w->c = f[4];
            goto done;
        }
        if (f[2] == 0) {
            w->status = ST_META;
            w->pos = at;
            goto done;
        }
        if (f[2] <= last) {
            w->status = ER_ORDER;
            w->pos = at;
            w->a = f[2];
            w->b = last;
            goto done;
        }
        body = f[0] + f[3] + f[4]; /* at most 2^20 + 2^30 */
        if (body > (uint64_t)(n - p)) {
            w->status = ST_MORE;
            w->pos = at;
            w->need = (p - at) + (size_t)body;
            goto done;
        }
        p += (size_t)body;
        if (count == 0) {
            first = f[2];
        }
        count++;
        last = f[2];
    }
done:
    w->count = count;
    w->first = first;
    w->last = last;
}

static PyObject *walk(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos;
    PyObject *last_obj;
    long long base = 0, where;
    unsigned long long last;
    walk_state w;
    const char *status;
    (void)self;

    if (!PyArg_ParseTuple(args, "y*nO|L:walk", &view, &pos, &last_obj, &base)) {
        return NULL;
    }
    last = PyLong_AsUnsignedLongLong(last_obj); /* OverflowError if negative or above 2^64 - 1 */
    if (last == (unsigned long long)-1 && PyErr_Occurred()) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (pos < 0 || pos > view.len) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "walk: pos %zd is outside the buffer (%zd bytes)", pos, view.len);
        return NULL;
    }
    memset(&w, 0, sizeof w);
    w.pos = (size_t)pos;
    w.last = last;
    Py_BEGIN_ALLOW_THREADS
    walk_entries((const uint8_t *)view.buf, (size_t)view.len, &w);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);

    where = (long long)((unsigned long long)base + w.pos); /* no signed overflow whatever base is */
    switch (w.status) {
    case ST_MORE:
        status = "more";
        break;
    case ST_META:
        status = "meta";
        break;
    case ST_END:
        status = "end";
        break;
    case ER_VARINT:
        return PyErr_Format(PyExc_ValueError, "natsarc: bad varint at byte %lld", where);
    case ER_NO_NAME:
        return PyErr_Format(PyExc_ValueError, "natsarc: entry at byte %lld has no name", where);
    case ER_AFTER_END:
        return PyErr_Format(PyExc_ValueError, "natsarc: data after the end marker at byte %lld", where);
    case ER_SIZES:
        return PyErr_Format(PyExc_ValueError,
                            "natsarc: entry at byte %lld declares impossible sizes (name %llu, header %llu, "
                            "payload %llu)",
                            where, (unsigned long long)w.a, (unsigned long long)w.b, (unsigned long long)w.c);
    default:
        return PyErr_Format(PyExc_ValueError, "natsarc: message sequence %llu at byte %lld follows sequence %llu",
                            (unsigned long long)w.a, where, (unsigned long long)w.b);
    }
    return Py_BuildValue("(nKKKsn)", (Py_ssize_t)w.pos, (unsigned long long)w.count, (unsigned long long)w.first,
                         (unsigned long long)w.last, status, (Py_ssize_t)w.need);
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS,
     "walk(buffer, pos, last_seq, base=0) -> (pos, count, first_seq, last_seq, status, need)\n\n"
     "Step over the complete NATSARC1 message entries from buffer[pos]; stop at an incomplete entry (\"more\"),\n"
     "an entry without a sequence (\"meta\", pos at its start) or the end marker (\"end\", pos after it).\n"
     "ValueError (offsets counted from base) if the archive is invalid there."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_natsarc", "The NATSARC1 message walk in C (accelerator for pipeline.format.natsarc).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__natsarc(void)
{
    return PyModule_Create(&module);
}

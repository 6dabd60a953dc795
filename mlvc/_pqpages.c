/* mlvc._pqpages: the page headers of a Parquet column chunk walked in C (optional;
 * mlvc/core/speedups.py; the pure-Python fallback, with the same results, is
 * mlvc.core.parquet._walk_py).
 *
 * walk(data, start, end, max_header) -> (inflated, values, dictionary)
 *
 * data        a buffer (bytes, memoryview, mmap) holding a Parquet file;
 * start, end  the column chunk's byte range in it (the caller checks 0 <= start <= end <=
 *             len(data));
 * max_header  the most bytes one page header may take.
 * Each page header (parquet.thrift PageHeader, Thrift compact protocol) gives its
 * uncompressed size (field 2) and stored size (field 3); the data page headers (fields 5 and
 * 8) their number of values (their field 1), and a dictionary page header (field 7) marks
 * the dictionary page. Returns the sum of the uncompressed sizes, the sum of the values (a
 * negative count as 0) and the largest dictionary page's uncompressed size. Raises
 * ValueError for a header that does not parse (a read at or past the end of its chunk or
 * max_header, a struct or container nested past 16 levels, a container of over 1000 items,
 * a varint of over 64 bits, an unknown type), whose fields 1-3 are not integers >= 0, or
 * sums that overflow 63 bits. About 0.5 us a header, where the Python walk takes ~9 us.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

#define MAX_DEPTH 16
#define MAX_ITEMS 1000

typedef struct {
    const unsigned char *b;
    Py_ssize_t pos, stop;
    const char *error;
} Reader;

static int fail(Reader *r, const char *why) {
    if (r->error == NULL) r->error = why;
    return -1;
}

static int byte_at(Reader *r, unsigned *out) {
    if (r->pos >= r->stop) return fail(r, "it runs past its chunk or max_header");
    *out = r->b[r->pos++];
    return 0;
}

static int varint(Reader *r, uint64_t *out) {
    uint64_t result = 0;
    for (int shift = 0;; shift += 7) {
        unsigned byte;
        if (byte_at(r, &byte) < 0) return -1;
        if (shift == 63 && (byte & 0x7F) > 1) return fail(r, "varint too long");
        result |= (uint64_t)(byte & 0x7F) << shift;
        if (byte < 0x80) {
            *out = result;
            return 0;
        }
        if (shift >= 63) return fail(r, "varint too long");
    }
}

static int64_t zigzag(uint64_t n) { return (int64_t)(n >> 1) ^ -(int64_t)(n & 1); }

/* A struct's integer fields 1..8 and, for struct fields 1..8, their own field 1 (when an
 * integer). Bits: ints (last value of that id an integer), structs (a struct). */
typedef struct {
    int64_t value[9], sub[9];
    unsigned ints, structs, subs;
} Fields;

static int skip(Reader *r, unsigned kind, int depth);

static int parse_struct(Reader *r, int depth, Fields *f) {
    if (depth > MAX_DEPTH) return fail(r, "structs nested too deep");
    int64_t last = 0;
    for (;;) {
        unsigned head;
        if (byte_at(r, &head) < 0) return -1;
        if (head == 0) return 0;
        unsigned kind = head & 0x0F;
        if (head >> 4) {
            last += head >> 4;
        } else {
            uint64_t n;
            if (varint(r, &n) < 0) return -1;
            last = zigzag(n);
        }
        int tracked = f != NULL && last >= 1 && last <= 8;
        unsigned bit = tracked ? 1u << last : 0;
        int assigns = (kind >= 1 && kind <= 2) || (kind >= 4 && kind <= 6) || kind == 12;
        if (tracked && assigns) {  /* this id's value is replaced (skipped kinds keep it) */
            f->ints &= ~bit;
            f->structs &= ~bit;
            f->subs &= ~bit;
        }
        if (kind >= 4 && kind <= 6) {
            uint64_t n;
            if (varint(r, &n) < 0) return -1;
            if (tracked) {
                f->value[last] = zigzag(n);
                f->ints |= bit;
            }
        } else if (kind == 12) {
            Fields sub;
            Fields *into = tracked ? &sub : NULL;
            if (into) sub.ints = sub.structs = sub.subs = 0;
            if (parse_struct(r, depth + 1, into) < 0) return -1;
            if (tracked) {
                f->structs |= bit;
                if (sub.ints & 2u) {
                    f->sub[last] = sub.value[1];
                    f->subs |= bit;
                }
            }
        } else if (kind == 1 || kind == 2) {
            /* a bool field: its value is its type (not an integer) */
        } else if (skip(r, kind, depth) < 0) {
            return -1;
        }
    }
}

static int skip(Reader *r, unsigned kind, int depth) {
    uint64_t n;
    unsigned byte;
    switch (kind) {
    case 1: case 2: case 3:
        return byte_at(r, &byte);
    case 7:
        for (int i = 0; i < 8; i++)
            if (byte_at(r, &byte) < 0) return -1;
        return 0;
    case 4: case 5: case 6:
        return varint(r, &n);
    case 8:
        if (varint(r, &n) < 0) return -1;
        if (n > (uint64_t)(r->stop - r->pos))
            return fail(r, "a binary runs past its chunk or max_header");
        r->pos += (Py_ssize_t)n;
        return 0;
    case 12:
        return parse_struct(r, depth + 1, NULL);
    case 9: case 10: case 11: {
        unsigned types[2];
        int ntypes;
        if (depth > MAX_DEPTH) return fail(r, "containers nested too deep");
        if (kind == 11) {
            if (varint(r, &n) < 0) return -1;
            ntypes = 0;
            if (n) {
                if (byte_at(r, &byte) < 0) return -1;
                types[0] = byte >> 4;
                types[1] = byte & 0x0F;
                ntypes = 2;
            }
        } else {
            if (byte_at(r, &byte) < 0) return -1;
            n = byte >> 4;
            types[0] = byte & 0x0F;
            ntypes = 1;
            if (n == 15 && varint(r, &n) < 0) return -1;
        }
        if (n > MAX_ITEMS) return fail(r, "a container of too many items in a page header");
        for (uint64_t i = 0; i < n; i++)
            for (int t = 0; t < ntypes; t++)
                if (skip(r, types[t], depth + 1) < 0) return -1;
        return 0;
    }
    default:
        return fail(r, "unknown compact type");
    }
}

static PyObject *walk(PyObject *self, PyObject *args) {
    PyObject *data;
    Py_ssize_t start, end, max_header;
    if (!PyArg_ParseTuple(args, "Onnn", &data, &start, &end, &max_header)) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) return NULL;
    if (start < 0 || end < start || end > view.len || max_header < 1) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "a range outside the buffer");
        return NULL;
    }
    const int64_t LIMIT = INT64_MAX;
    int64_t inflated = 0, values = 0, dictionary = 0;
    Py_ssize_t pos = start;
    const char *error = NULL;
    while (pos < end) {
        Reader r = {view.buf, pos, pos + (end - pos < max_header ? end - pos : max_header), NULL};
        Fields f;
        f.ints = f.structs = f.subs = 0;
        if (parse_struct(&r, 0, &f) < 0) {
            error = r.error;
            break;
        }
        pos = r.pos;
        if ((f.ints & 0xE) != 0xE || f.value[1] < 0 || f.value[2] < 0 || f.value[3] < 0) {
            error = "a page header lacks its sizes";
            break;
        }
        int64_t size = f.value[2], stored = f.value[3];
        if (size > LIMIT - inflated) {
            error = "its pages' sizes overflow";
            break;
        }
        inflated += size;
        for (int field = 5; field <= 8; field += 3) {
            unsigned bit = 1u << field;
            if ((f.structs & bit) && (f.subs & bit) && f.sub[field] > 0) {
                if (f.sub[field] > LIMIT - values) {
                    error = "its pages' sizes overflow";
                    break;
                }
                values += f.sub[field];
            }
        }
        if (error) break;
        if ((f.structs & (1u << 7)) && size > dictionary) dictionary = size;
        if (stored >= end - pos) break;
        pos += (Py_ssize_t)stored;
    }
    PyBuffer_Release(&view);
    if (error) {
        PyErr_SetString(PyExc_ValueError, error);
        return NULL;
    }
    return Py_BuildValue("(LLL)", (long long)inflated, (long long)values, (long long)dictionary);
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS,
     "walk(data, start, end, max_header) -> (inflated, values, dictionary): the page headers "
     "of a Parquet column chunk summed (see the module's comment)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "mlvc._pqpages",
                                    "Parquet page headers walked in C.", -1, methods};

PyMODINIT_FUNC PyInit__pqpages(void) { return PyModule_Create(&module); }

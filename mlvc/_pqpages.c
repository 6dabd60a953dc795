/* mlvc._pqpages: the page headers of a Parquet column chunk walked in C (optional;
 * mlvc/core/speedups.py; the pure-Python twin, with the same results, is
 * mlvc.core.parquet._walk_py).
 *
 * walk(data, start, end, max_header, soft[, rows, flat, starts, deltas])
 *     -> (inflated, values, dictionary, delta, pos, counted)
 * delta(data, pos, decode) -> (total, mini_blocks, end, positive)
 *
 * data        a buffer (bytes, memoryview, mmap) holding a Parquet file;
 * start, end  the byte range to walk (0 <= start <= end <= len(data));
 * max_header  the most bytes one page header may take;
 * soft        a header that does not parse (or lacks its sizes) ends the walk instead of
 *             raising;
 * rows        (>= 0) the walk ends one data page after the first data page at which the
 *             rows counted so far reach ``rows`` (what a reader of the chunk's first
 *             ``rows`` rows inflates: it may look at one page more for where a row ends);
 *             -1: no end. A data page is one of type DATA_PAGE (0) with its v1 header
 *             (field 5) or DATA_PAGE_V2 (3) with its v2 header (field 8): its rows are its
 *             values (field 1 of that header, as the reader reads it) when ``flat`` (a
 *             column of no lists), else what ``starts`` returns for it, else none;
 * starts      None, or called for each data page while rows are counted, as
 *             starts(at, stored, size, v2, values, levels, inflated): the page's bytes
 *             ``data[at:at + stored]``, its uncompressed size, whether it is v2, its
 *             values, its repetition levels' encoding (v1, field 4) or byte length (v2,
 *             field 6), -1 when absent, and the inflated sum so far; it returns the rows
 *             that start in the page (a negative number counts as 0), or raises;
 * deltas      None, or called for each data page of delta-encoded strings whose header
 *             is the one its type reads (DATA_PAGE with field 5, DATA_PAGE_V2 with 8), as
 *             deltas(header_at, at, stored, size, inflated): where its header begins, then
 *             as for starts; it returns the bytes a reader keeps to decode the page's
 *             lengths (then counted in ``delta`` in place of the bound below), or a
 *             negative number (the bound is counted), or raises.
 * Each page header (parquet.thrift PageHeader, Thrift compact protocol) gives its
 * uncompressed size (field 2) and stored size (field 3); a data page header (field 5, or 8
 * for v2) its number of values (its field 1) and encoding (field 2, or 4 for v2); a
 * dictionary page header (field 7) marks the dictionary page, and its values (its field 1)
 * are counted in ``inflated`` at DICT_ENTRY bytes each, beside a second copy of the page (a
 * reader keeps a pointer and a length per entry, and copies the values). A field counts only when it
 * has the type parquet.thrift gives it (i32, or struct for 5, 7, 8), as Arrow's Thrift
 * reader skips a field of another type and keeps the value it read before; an i32 is the
 * varint's low 32 bits, zigzag-decoded, as Thrift reads one. Returns the sum of the
 * uncompressed sizes, the sum of the values (a negative count as 0), the largest
 * dictionary page's uncompressed size, the sum over DELTA_BYTE_ARRAY data pages of values
 * times uncompressed size and over DELTA_(LENGTH_)BYTE_ARRAY ones of DELTA_LENGTHS times
 * it, the position the walk ended at (after the last page's
 * stored bytes), and the rows counted (above). Raises ValueError for a header that does not parse (a read at or past the
 * end of the range or max_header, a struct or container nested past 16 levels, a container
 * of over 1000 items, a varint of over 64 bits, an unknown type) or whose fields 1-3 are
 * missing or negative, unless soft, and for sums over 63 bits. About 0.5 us a header,
 * where the Python walk takes ~9 us.
 *
 * delta() reads the DELTA_BINARY_PACKED stream of 32-bit values at data[pos:] as Arrow's
 * decoder does (parquet-format Encodings.md): its header (values per block, mini-blocks
 * per block, total values, first value: ULEB128 of at most 5 bytes each, the first
 * zigzag) is checked as Arrow checks it (a block of a non-zero multiple of 128 values, a
 * mini-block of a non-zero multiple of 32) and a total of 2**31 or more is refused. With
 * ``decode`` every value is decoded (each mini-block that holds one read whole, its bit
 * width at most 32): ``end`` is the position after the last such mini-block and
 * ``positive`` the sum of the values above 0 (as int32, wrapping as Arrow adds them);
 * without, ``end`` is the position after the header and ``positive`` 0. ValueError for a
 * stream Arrow's decoder would not read (a bad header, a width over 32, bytes missing).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

#define MAX_DEPTH 16
#define MAX_ITEMS 1000
#define I32 5
#define STRUCT 12
#define DELTA_LENGTH_BYTE_ARRAY 6
#define DELTA_BYTE_ARRAY 7
/* without deltas, a rough count of such a page's lengths per uncompressed byte (4 bytes
 * each, both streams, blocks of 32768 in 5 bytes): no bound, as one block of width 0 may
 * hold 2**32 values in 2 bytes; mlvc.core.parquet passes deltas */
#define DELTA_LENGTHS (8 * 6554)
#define DICT_ENTRY 24

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

static int64_t wrap16(int64_t v) { return (int64_t)((v + 0x8000) & 0xFFFF) - 0x8000; }

/* A struct's i32 fields 1..8 and, for its struct fields 1..8, their i32 fields 1..8. */
typedef struct {
    int64_t value[9];
    unsigned ints;
} Ints;

typedef struct {
    Ints own, sub[9];
    unsigned structs;
} Fields;

static int skip(Reader *r, unsigned kind, int depth);

/* ``f``: where to put what is read (NULL: nothing kept); ``sub``: the struct is itself a
 * field of the header (its own struct fields are then not kept). */
static int parse_struct(Reader *r, int depth, Fields *f, Ints *sub) {
    if (depth > MAX_DEPTH) return fail(r, "structs nested too deep");
    int64_t last = 0;
    for (;;) {
        unsigned head;
        if (byte_at(r, &head) < 0) return -1;
        if (head == 0) return 0;
        unsigned kind = head & 0x0F;
        /* a field id is 16 bits to Thrift's reader: a delta wraps, and a long id is read as
         * a 32-bit varint cut to 16 bits (65538 is field 2) */
        if (head >> 4) {
            last = wrap16(last + (head >> 4));
        } else {
            uint64_t n;
            if (varint(r, &n) < 0) return -1;
            last = wrap16(zigzag(n & 0xFFFFFFFFu));
        }
        int kept = last >= 1 && last <= 8;
        if (kind == I32) {
            uint64_t n;
            if (varint(r, &n) < 0) return -1;
            Ints *into = f ? &f->own : sub;
            if (into && kept) {
                into->value[last] = zigzag(n & 0xFFFFFFFFu);
                into->ints |= 1u << last;
            }
        } else if (kind == STRUCT) {
            /* a field given twice is read into the first (Thrift's reader): the fields the
             * second does not give stay as they were */
            Ints *into = (f && kept) ? &f->sub[last] : NULL;
            if (parse_struct(r, depth + 1, NULL, into) < 0) return -1;
            if (into) f->structs |= 1u << last;
        } else if (kind == 1 || kind == 2) {
            /* a bool field: its value is its type */
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
        return parse_struct(r, depth + 1, NULL, NULL);
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

static int add(int64_t *sum, int64_t n) {
    if (n > INT64_MAX - *sum) return -1;
    *sum += n;
    return 0;
}

/* The rows that start in a data page (see the module's comment); -1 with an exception set. */
static int64_t page_rows(PyObject *starts, int flat, int64_t at, int64_t stored, int64_t size,
                         int v2, const Ints *sub, int64_t inflated) {
    int64_t n = (sub->ints & 2u) && sub->value[1] > 0 ? sub->value[1] : 0;
    if (flat) return n;
    if (starts == Py_None) return 0;
    int field = v2 ? 6 : 4;
    int64_t levels = (sub->ints & (1u << field)) ? sub->value[field] : -1;
    PyObject *got = PyObject_CallFunction(starts, "LLLOLLL", (long long)at, (long long)stored,
                                          (long long)size, v2 ? Py_True : Py_False,
                                          (long long)n, (long long)levels, (long long)inflated);
    if (got == NULL) return -1;
    long long rows = PyLong_AsLongLong(got);
    Py_DECREF(got);
    if (rows == -1 && PyErr_Occurred()) return -1;
    return rows > 0 ? rows : 0;
}

/* An unsigned LEB128 of at most 5 bytes that fits 32 bits (Arrow's GetVlqInt). */
static int vlq32(Reader *r, uint32_t *out) {
    uint64_t result = 0;
    for (int i = 0; i < 5; i++) {
        unsigned byte;
        if (byte_at(r, &byte) < 0) return -1;
        result |= (uint64_t)(byte & 0x7F) << (7 * i);
        if (byte < 0x80) {
            if (result >> 32) return fail(r, "a delta header's number is over 32 bits");
            *out = (uint32_t)result;
            return 0;
        }
    }
    return fail(r, "a delta header's number is over 5 bytes");
}

static int32_t zigzag32(uint32_t n) { return (int32_t)((n >> 1) ^ (0u - (n & 1u))); }

static PyObject *delta(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *data;
    Py_ssize_t pos;
    int decode;
    if (!PyArg_ParseTuple(args, "Onp", &data, &pos, &decode)) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) return NULL;
    if (pos < 0 || pos > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "a position outside the buffer");
        return NULL;
    }
    Reader r = {view.buf, pos, view.len, NULL};
    uint32_t per_block = 0, blocks = 0, total = 0, first = 0;
    int64_t positive = 0;
    if (vlq32(&r, &per_block) < 0 || vlq32(&r, &blocks) < 0 || vlq32(&r, &total) < 0 ||
        vlq32(&r, &first) < 0)
        goto done;
    uint32_t per_mini = blocks ? per_block / blocks : 0;
    if (per_block == 0 || per_block % 128 || blocks == 0 || per_mini == 0 || per_mini % 32) {
        fail(&r, "a delta header Arrow refuses");
        goto done;
    }
    if (total >> 31) {
        fail(&r, "a delta header announces 2**31 values or more");
        goto done;
    }
    if (!decode || total == 0) goto done;
    uint32_t last = (uint32_t)zigzag32(first);
    if ((int32_t)last > 0) positive += (int32_t)last;
    uint64_t left = total - 1;
    while (left > 0 && r.error == NULL) {
        uint32_t raw;
        if (vlq32(&r, &raw) < 0) break;
        uint32_t min_delta = (uint32_t)zigzag32(raw);
        if ((uint64_t)blocks > (uint64_t)(r.stop - r.pos)) {
            fail(&r, "a delta block's bit widths are missing");
            break;
        }
        const unsigned char *widths = r.b + r.pos;
        r.pos += blocks;
        for (uint32_t m = 0; m < blocks && left > 0; m++) {
            unsigned w = widths[m];
            if (w > 32) {
                fail(&r, "a delta mini-block's bit width is over 32");
                break;
            }
            uint64_t bytes = (uint64_t)per_mini * w / 8;
            if (bytes > (uint64_t)(r.stop - r.pos)) {
                fail(&r, "a delta mini-block's bytes are missing");
                break;
            }
            const unsigned char *at = r.b + r.pos;
            uint64_t take = left < per_mini ? left : per_mini;
            for (uint64_t j = 0; j < take; j++) {
                uint32_t packed = 0;
                if (w) {
                    uint64_t bit = j * w, window = 0;
                    uint64_t byte = bit >> 3, end = (bit + w + 7) >> 3;
                    for (uint64_t k = byte; k < end; k++)
                        window |= (uint64_t)at[k] << (8 * (k - byte));
                    uint64_t mask = w == 32 ? 0xFFFFFFFFull : (1ull << w) - 1;
                    packed = (uint32_t)((window >> (bit & 7)) & mask);
                }
                last = last + min_delta + packed;
                if ((int32_t)last > 0) positive += (int32_t)last;
            }
            r.pos += (Py_ssize_t)bytes;
            left -= take;
        }
    }
done:
    PyBuffer_Release(&view);
    if (r.error) {
        PyErr_SetString(PyExc_ValueError, r.error);
        return NULL;
    }
    return Py_BuildValue("(kkLL)", (unsigned long)total, (unsigned long)blocks, (long long)r.pos,
                         (long long)positive);
}

/* What ``deltas`` says a page of delta strings keeps (see the module's comment): >= 0, -1
 * to count the bound, -2 with an exception set. */
static int64_t page_deltas(PyObject *deltas, int64_t header_at, int64_t at, int64_t stored,
                           int64_t size, int64_t inflated) {
    PyObject *got = PyObject_CallFunction(deltas, "LLLLL", (long long)header_at, (long long)at,
                                          (long long)stored, (long long)size,
                                          (long long)inflated);
    if (got == NULL) return -2;
    long long n = PyLong_AsLongLong(got);
    Py_DECREF(got);
    if (n == -1 && PyErr_Occurred()) return -2;
    return n >= 0 ? n : -1;
}

static PyObject *walk(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *data, *starts = Py_None, *deltas = Py_None;
    Py_ssize_t start, end, max_header;
    Py_ssize_t rows = -1;
    int soft, flat = 0;
    if (!PyArg_ParseTuple(args, "Onnnp|npOO", &data, &start, &end, &max_header, &soft, &rows,
                          &flat, &starts, &deltas))
        return NULL;
    if ((starts != Py_None && !PyCallable_Check(starts)) ||
        (deltas != Py_None && !PyCallable_Check(deltas))) {
        PyErr_SetString(PyExc_TypeError, "starts and deltas must be callable or None");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) return NULL;
    if (start < 0 || end < start || end > view.len || max_header < 1) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "a range outside the buffer");
        return NULL;
    }
    int64_t inflated = 0, values = 0, dictionary = 0, delta = 0, pos = start, counted = 0;
    int reached = 0;  /* the rows were counted: the next data page is the last walked */
    const char *error = NULL;
    int raised = 0;  /* starts or deltas raised: its exception is set */
    while (pos < end) {
        int64_t header_at = pos;
        Py_ssize_t stop = end - pos < max_header ? end : pos + max_header;
        Reader r = {view.buf, (Py_ssize_t)pos, stop, NULL};
        Fields f;
        memset(&f, 0, sizeof f);
        if (parse_struct(&r, 0, &f, NULL) < 0) {
            if (!soft) error = r.error;
            break;
        }
        pos = r.pos;
        if ((f.own.ints & 0xE) != 0xE || f.own.value[1] < 0 || f.own.value[2] < 0 ||
            f.own.value[3] < 0) {
            if (!soft) error = "a page header lacks its sizes";
            break;
        }
        int64_t size = f.own.value[2], stored = f.own.value[3];
        if (add(&inflated, size) < 0) {
            error = "its pages' sizes overflow";
            break;
        }
        int64_t kind = f.own.value[1];
        int v1 = kind == 0 && (f.structs & (1u << 5)), v2 = kind == 3 && (f.structs & (1u << 8));
        static const int kinds[2][2] = {{5, 2}, {8, 4}};  /* data page headers: v1, v2 */
        for (int k = 0; k < 2 && !error; k++) {
            int field = kinds[k][0], encoding = kinds[k][1];
            Ints *sub = &f.sub[field];
            int64_t coded = (sub->ints & (1u << encoding)) ? sub->value[encoding] : -1;
            int strings = coded == DELTA_LENGTH_BYTE_ARRAY || coded == DELTA_BYTE_ARRAY;
            int64_t told = -1;  /* what deltas says the page keeps */
            if (strings && (k ? v2 : v1) && deltas != Py_None) {  /* the header its type reads */
                told = page_deltas(deltas, header_at, pos, stored, size, inflated);
                if (told == -2) {
                    raised = 1;
                    break;
                }
            }
            if (told >= 0 && add(&delta, told) < 0) error = "its pages' sizes overflow";
            if ((f.structs & (1u << field)) && strings && told < 0 &&
                add(&delta, DELTA_LENGTHS * size) < 0)
                error = "its pages' sizes overflow";
            if (!(f.structs & (1u << field)) || !(sub->ints & 2u) || sub->value[1] <= 0)
                continue;
            if (add(&values, sub->value[1]) < 0) error = "its pages' sizes overflow";
            if (told < 0 && coded == DELTA_BYTE_ARRAY) {
                if (size && sub->value[1] > INT64_MAX / size) error = "its pages' sizes overflow";
                else if (add(&delta, sub->value[1] * size) < 0) error = "its pages' sizes overflow";
            }
        }
        if (!error && (f.structs & (1u << 7))) {  /* a dictionary page header */
            if (size > dictionary) dictionary = size;
            int64_t entries = (f.sub[7].ints & 2u) && f.sub[7].value[1] > 0 ? f.sub[7].value[1] : 0;
            if (add(&inflated, size) < 0 || add(&inflated, DICT_ENTRY * entries) < 0)
                error = "its pages' sizes overflow";
        }
        if (error || raised) break;
        int64_t at = pos;
        pos = stored > INT64_MAX - pos ? INT64_MAX : pos + stored;
        if (rows < 0 || !(v1 || v2)) continue;
        if (reached) break;
        int64_t n = page_rows(starts, flat, at, stored, size, v2, &f.sub[v2 ? 8 : 5], inflated);
        if (n < 0) {
            raised = 1;
            break;
        }
        if (add(&counted, n) < 0) counted = INT64_MAX;
        if (counted >= rows) reached = 1;
    }
    PyBuffer_Release(&view);
    if (raised) return NULL;
    if (error) {
        PyErr_SetString(PyExc_ValueError, error);
        return NULL;
    }
    return Py_BuildValue("(LLLLLL)", (long long)inflated, (long long)values,
                         (long long)dictionary, (long long)delta, (long long)pos,
                         (long long)counted);
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS,
     "walk(data, start, end, max_header, soft[, rows, flat, starts, deltas]) -> "
     "(inflated, values, dictionary, delta, pos, counted): "
     "the page headers of a Parquet column chunk summed (see the module's comment)."},
    {"delta", delta, METH_VARARGS,
     "delta(data, pos, decode) -> (total, mini_blocks, end, positive): a DELTA_BINARY_PACKED "
     "stream read as Arrow reads it (see the module's comment)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "mlvc._pqpages",
                                    "Parquet page headers walked in C.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__pqpages(void) { return PyModule_Create(&module); }

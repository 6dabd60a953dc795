/* mlvc._packfind: a batch of ids looked up in one pack index in C (optional;
 * mlvc/core/speedups.py; the pure-Python fallback is PackIndex.find_many's loop).
 *
 * find(index, ids_off, count, ids) -> [(k, position), ...]
 *
 * index    a buffer (the index file's mmap) holding the 256-entry little-endian u32 fanout
 *          at ids_off - 1024, then `count` sorted 32-byte ids at ids_off (format in
 *          mlvc/store/pack/index.py);
 * ids      a list or tuple of bytes (ObjectId is one); an item that is not 32 bytes long is
 *          never found; an item that is not bytes raises TypeError.
 * Returns, in the order of `ids`, one (k, position) for each ids[k] the index holds: its
 * position among the index's sorted ids. Each id costs a fanout step and a binary search
 * by memcmp, ~0.1 us, where the Python loop costs ~3 us an id (a big file's put looks up
 * each of its 16k chunks per GiB in every one of up to 16 indexes).
 * A damaged index cannot make it read outside the buffer: the ids' area is checked against
 * the buffer's length, and each fanout bound is clamped to `count`.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define ID 32
#define FANOUT_BYTES 1024

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static PyObject *find(PyObject *self, PyObject *args) {
    PyObject *index, *ids;
    Py_ssize_t ids_off, count;
    if (!PyArg_ParseTuple(args, "OnnO", &index, &ids_off, &count, &ids)) return NULL;
    if (!PyList_Check(ids) && !PyTuple_Check(ids)) {
        PyErr_SetString(PyExc_TypeError, "ids must be a list or a tuple of bytes");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(index, &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *out = NULL;
    if (ids_off < FANOUT_BYTES || count < 0 || ids_off > view.len ||
        count > (view.len - ids_off) / ID) {
        PyErr_SetString(PyExc_ValueError, "the index's ids lie outside its buffer");
        goto done;
    }
    const unsigned char *fan = (const unsigned char *)view.buf + ids_off - FANOUT_BYTES;
    const unsigned char *base = (const unsigned char *)view.buf + ids_off;
    out = PyList_New(0);
    if (out == NULL) goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(ids);
    PyObject **items = PySequence_Fast_ITEMS(ids);
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *item = items[k];
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "ids[%zd] is %.100s, not bytes", k,
                         Py_TYPE(item)->tp_name);
            Py_CLEAR(out);
            goto done;
        }
        if (PyBytes_GET_SIZE(item) != ID) continue;
        const unsigned char *oid = (const unsigned char *)PyBytes_AS_STRING(item);
        int b = oid[0];
        Py_ssize_t lo = b ? le32(fan + 4 * (b - 1)) : 0;
        Py_ssize_t hi = le32(fan + 4 * b);
        if (hi > count) hi = count;
        if (lo > hi) lo = hi;
        while (lo < hi) {
            Py_ssize_t mid = lo + ((hi - lo) >> 1);
            int c = memcmp(base + ID * mid, oid, ID);
            if (c < 0) {
                lo = mid + 1;
            } else if (c > 0) {
                hi = mid;
            } else {
                PyObject *hit = Py_BuildValue("(nn)", k, mid);
                if (hit == NULL || PyList_Append(out, hit) < 0) {
                    Py_XDECREF(hit);
                    Py_CLEAR(out);
                    goto done;
                }
                Py_DECREF(hit);
                break;
            }
        }
    }
done:
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef methods[] = {
    {"find", find, METH_VARARGS,
     "find(index, ids_off, count, ids) -> [(k, position), ...]: where each of ids is among an "
     "index's sorted ids (see the module's comment)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "mlvc._packfind",
                                    "Batch lookups in pack index files.", -1, methods};

PyMODINIT_FUNC PyInit__packfind(void) { return PyModule_Create(&module); }

/* mlvc._metricbuf: a live run's metric buffer, its per-point path in C (optional speedup).
 *
 * Why C: a Python log_metric cannot reach half the speed of a bare list-append loop. An empty
 * Python method with log_metric's signature costs 82 ns against the bare append's 59 ns, and
 * the body (a dict lookup, the step counter, time.time_ns(), four list appends) ~170 ns more
 * (benchmarks/RESULTS.md, "Tracking under load"). Here a LiveRun's log_metric attribute is
 * this type's bound method: no Python frame runs per point.
 *
 * MetricBuffer(slow) holds the points in four growable C arrays (key code int32, step int64,
 * time ns int64, value float64). log_metric(key, value, step=None, timestamp=None) takes the
 * common case itself: a key already logged (an exact str), a float or int value, a step None or
 * an int in [-2**63, 2**63 - 1), a timestamp None (clock_gettime(CLOCK_REALTIME), as
 * time.time_ns), an int or a float. Anything else (a new key, a numpy scalar, a string, a value
 * or a step out of range...) goes to slow(buf, key, value, step, timestamp), the Python
 * validation in mlvc/runs/metricbuf.py, which refuses or normalises exactly as the pure-Python
 * buffer does and then calls push(). So every rule lives in one place, in Python.
 *
 * Locking: every method runs holding the GIL and calls no Python code between reading the
 * buffer and writing it (the dict lookup is of an exact str), so a point is appended whole
 * with respect to the flusher thread's take() and to other threads logging: take() sees
 * complete points only. The slow path runs Python code, then appends with push(), which is
 * again atomic. take() copies the arrays into bytes (one memcpy a column; numpy and pyarrow
 * read them without another copy through the buffer protocol) and empties the buffer. The
 * module does not declare Py_mod_gil, so a free-threaded CPython turns the GIL back on when it
 * imports it: this atomicity needs the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

typedef struct {
    PyObject_HEAD
    PyObject *keys;   /* dict: key (str) -> code (int) */
    PyObject *names;  /* list: code -> key */
    PyObject *slow;   /* callable(buf, key, value, step, timestamp): the Python path */
    int64_t *next;    /* next default step, by code */
    Py_ssize_t nkeys, keycap;
    int32_t *codes;
    int64_t *steps;
    int64_t *times;
    double *values;
    Py_ssize_t n, cap;
} Buf;

static PyObject *kw_metric[4];  /* key, value, step, timestamp (interned) */
static PyObject *kw_metrics[3]; /* metrics, step, timestamp */

/* *p reallocated to cap items of size bytes; on failure *p is left as it was. 0 or -1. */
static int
resize(void **p, Py_ssize_t cap, size_t size)
{
    void *q = PyMem_Realloc(*p, cap * size);
    if (q == NULL)
        return -1;
    *p = q;
    return 0;
}

static int
grow(Buf *self)
{
    Py_ssize_t cap = self->cap ? self->cap * 2 : 64; /* small: a server holds many runs */
    /* the arrays that grew keep their points; cap stays the smallest size */
    if (cap > PY_SSIZE_T_MAX / 8 || resize((void **)&self->codes, cap, sizeof(int32_t)) < 0 ||
        resize((void **)&self->steps, cap, sizeof(int64_t)) < 0 ||
        resize((void **)&self->times, cap, sizeof(int64_t)) < 0 ||
        resize((void **)&self->values, cap, sizeof(double)) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    self->cap = cap;
    return 0;
}

static inline int
append(Buf *self, int32_t code, int64_t step, int64_t ns, double value)
{
    if (self->n == self->cap && grow(self) < 0)
        return -1;
    Py_ssize_t i = self->n;
    self->codes[i] = code;
    self->steps[i] = step;
    self->times[i] = ns;
    self->values[i] = value;
    self->n = i + 1;
    self->next[code] = step + 1; /* step < INT64_MAX: checked by the callers */
    return 0;
}

/* The code of a key already logged, -1 if new (or not an exact str), -2 on error. */
static inline Py_ssize_t
code_of(Buf *self, PyObject *key)
{
    PyObject *c = PyDict_GetItemWithError(self->keys, key);
    if (c == NULL)
        return PyErr_Occurred() ? -2 : -1;
    return PyLong_AsSsize_t(c); /* made by add_key: 0 <= c < nkeys */
}

static inline int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The fast path: 0 appended, 1 not taken (the caller runs the slow path), -1 error. */
static int
fast(Buf *self, PyObject *key, PyObject *value, PyObject *step, PyObject *timestamp)
{
    if (!PyUnicode_CheckExact(key))
        return 1;
    double v;
    if (PyFloat_CheckExact(value))
        v = PyFloat_AS_DOUBLE(value);
    else if (PyLong_CheckExact(value)) {
        v = PyLong_AsDouble(value);
        if (v == -1.0 && PyErr_Occurred()) { /* too large: the slow path refuses it */
            PyErr_Clear();
            return 1;
        }
    }
    else
        return 1;
    int64_t ns;
    if (timestamp == Py_None)
        ns = now_ns();
    else if (PyFloat_CheckExact(timestamp)) {
        /* Python: round(float(t) * 1e6) * 1000; round() and nearbyint() both round half to
         * even. Beyond +-9.2e15 us (or NaN, inf) the slow path decides. */
        double us = PyFloat_AS_DOUBLE(timestamp) * 1e6;
        if (!(fabs(us) < 9.2e15))
            return 1;
        ns = (int64_t)nearbyint(us) * 1000;
    }
    else if (PyLong_CheckExact(timestamp)) {
        int overflow;
        long long t = PyLong_AsLongLongAndOverflow(timestamp, &overflow);
        if (overflow || (t == -1 && PyErr_Occurred()) ||
            __builtin_mul_overflow((int64_t)t, (int64_t)1000000000, &ns)) {
            PyErr_Clear();
            return 1;
        }
    }
    else
        return 1;
    Py_ssize_t code = code_of(self, key);
    if (code < 0)
        return code == -2 ? -1 : 1;
    int64_t s;
    if (step == Py_None) {
        s = self->next[code];
        if (s == INT64_MAX) /* refused by the slow path */
            return 1;
    }
    else if (PyLong_CheckExact(step)) {
        int overflow;
        long long t = PyLong_AsLongLongAndOverflow(step, &overflow);
        if (overflow || t == INT64_MAX || (t == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 1;
        }
        s = t;
    }
    else
        return 1;
    return append(self, (int32_t)code, s, ns, v);
}

static int
log_one(Buf *self, PyObject *key, PyObject *value, PyObject *step, PyObject *timestamp)
{
    int r = fast(self, key, value, step, timestamp);
    if (r <= 0)
        return r;
    if (self->slow == NULL) {
        PyErr_SetString(PyExc_TypeError, "MetricBuffer was not initialised");
        return -1;
    }
    PyObject *args[5] = {(PyObject *)self, key, value, step, timestamp};
    PyObject *res = PyObject_Vectorcall(self->slow, args, 5, NULL);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 0;
}

/* Arguments as a Python method's take them: positional, then keywords by name; params[i] the
 * interned names, the first nrequired required, the rest None by default. 0 or -1. */
static int
parse(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
      PyObject **params, int nparams, int nrequired, PyObject **out)
{
    for (int i = 0; i < nparams; i++)
        out[i] = i < nrequired ? NULL : Py_None;
    if (nargs > nparams) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes from %d to %d positional arguments but %zd were given", fname,
                     nrequired + 1, nparams + 1, nargs + 1);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        out[i] = args[i];
    Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nk; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        int at = -1;
        for (int j = 0; j < nparams && at < 0; j++)
            if (name == params[j])
                at = j;
        for (int j = 0; j < nparams && at < 0; j++) {
            int eq = PyUnicode_Compare(name, params[j]);
            if (eq == -1 && PyErr_Occurred())
                return -1;
            if (eq == 0)
                at = j;
        }
        if (at < 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname,
                         name);
            return -1;
        }
        if (at < nargs) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%U'", fname,
                         name);
            return -1;
        }
        out[at] = args[nargs + i];
    }
    for (int i = 0; i < nrequired; i++)
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%U'", fname,
                         params[i]);
            return -1;
        }
    return 0;
}

static PyObject *
Buf_log_metric(Buf *self, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames)
{
    PyObject *a[4];
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL && nargs == 2) { /* the common call: log_metric("loss", v) */
        a[0] = args[0];
        a[1] = args[1];
        a[2] = a[3] = Py_None;
    }
    else if (parse("log_metric", args, nargs, kwnames, kw_metric, 4, 2, a) < 0)
        return NULL;
    if (log_one(self, a[0], a[1], a[2], a[3]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Buf_log_metrics(Buf *self, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames)
{
    /* log_metrics(metrics, step=None, timestamp=None): log_metric for each item, in order;
     * the points before a refused one are kept (as the Python loop does). */
    PyObject *a[3];
    if (parse("log_metrics", args, PyVectorcall_NARGS(nargsf), kwnames, kw_metrics, 3, 1, a) < 0)
        return NULL;
    PyObject *metrics = a[0], *step = a[1], *timestamp = a[2];
    if (PyDict_CheckExact(metrics)) {
        Py_ssize_t pos = 0, size = PyDict_GET_SIZE(metrics);
        PyObject *k, *v;
        while (PyDict_Next(metrics, &pos, &k, &v)) {
            Py_INCREF(k);
            Py_INCREF(v);
            int r = log_one(self, k, v, step, timestamp);
            Py_DECREF(k);
            Py_DECREF(v);
            if (r < 0)
                return NULL;
            if (PyDict_GET_SIZE(metrics) != size) {
                PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
                return NULL;
            }
        }
        Py_RETURN_NONE;
    }
    PyObject *items = PyObject_CallMethod(metrics, "items", NULL);
    if (items == NULL)
        return NULL;
    PyObject *it = PyObject_GetIter(items);
    Py_DECREF(items);
    if (it == NULL)
        return NULL;
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *k, *v;
        if (!PyArg_ParseTuple(item, "OO:log_metrics", &k, &v)) { /* as `for k, v in` fails */
            Py_DECREF(item);
            Py_DECREF(it);
            return NULL;
        }
        int r = log_one(self, k, v, step, timestamp);
        Py_DECREF(item);
        if (r < 0) {
            Py_DECREF(it);
            return NULL;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Buf_code(Buf *self, PyObject *key)
{
    /* code(key): the key's code, or None if it was never logged (TypeError if unhashable) */
    PyObject *c = PyDict_GetItemWithError(self->keys, key);
    if (c == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    Py_INCREF(c);
    return c;
}

static PyObject *
Buf_add_key(Buf *self, PyObject *key)
{
    /* add_key(key) -> code: a new key (the caller checked it), its next step 0 */
    if (!PyUnicode_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "add_key() takes a str");
        return NULL;
    }
    int has = PyDict_Contains(self->keys, key);
    if (has != 0)
        return has < 0 ? NULL : PyErr_Format(PyExc_ValueError, "key %R is already known", key);
    if (self->nkeys >= INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "too many metric keys in one run");
        return NULL;
    }
    if (self->nkeys == self->keycap) {
        Py_ssize_t cap = self->keycap ? self->keycap * 2 : 8;
        int64_t *next = PyMem_Realloc(self->next, cap * sizeof(int64_t));
        if (next == NULL)
            return PyErr_NoMemory();
        self->next = next;
        self->keycap = cap;
    }
    PyObject *code = PyLong_FromSsize_t(self->nkeys);
    if (code == NULL)
        return NULL;
    if (PyList_Append(self->names, key) < 0) {
        Py_DECREF(code);
        return NULL;
    }
    if (PyDict_SetItem(self->keys, key, code) < 0) {
        /* undo the name so that names and keys stay in step */
        PyList_SetSlice(self->names, self->nkeys, self->nkeys + 1, NULL);
        Py_DECREF(code);
        return NULL;
    }
    self->next[self->nkeys] = 0;
    self->nkeys++;
    return code;
}

static PyObject *
Buf_next_step(Buf *self, PyObject *code)
{
    Py_ssize_t c = PyLong_AsSsize_t(code);
    if (c == -1 && PyErr_Occurred())
        return NULL;
    if (c < 0 || c >= self->nkeys)
        return PyErr_Format(PyExc_IndexError, "no metric key has code %zd", c);
    return PyLong_FromLongLong(self->next[c]);
}

static PyObject *
Buf_push(Buf *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* push(code, step, ns, value): one point the slow path checked; step < 2**63 - 1 */
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "push() takes 4 arguments (code, step, ns, value)");
        return NULL;
    }
    Py_ssize_t c = PyLong_AsSsize_t(args[0]);
    if (c == -1 && PyErr_Occurred())
        return NULL;
    if (c < 0 || c >= self->nkeys)
        return PyErr_Format(PyExc_IndexError, "no metric key has code %zd", c);
    long long step = PyLong_AsLongLong(args[1]);
    if (step == -1 && PyErr_Occurred())
        return NULL;
    if (step == INT64_MAX) {
        PyErr_SetString(PyExc_OverflowError, "step 2**63 - 1 has no next step");
        return NULL;
    }
    long long ns = PyLong_AsLongLong(args[2]);
    if (ns == -1 && PyErr_Occurred())
        return NULL;
    double v = PyFloat_AsDouble(args[3]);
    if (v == -1.0 && PyErr_Occurred())
        return NULL;
    if (append(self, (int32_t)c, step, ns, v) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Buf_take(Buf *self, PyObject *Py_UNUSED(ignored))
{
    /* take() -> None, or (names, codes, steps, times, values) of every point buffered, and the
     * buffer emptied: codes an int when all points have one key (a block without per-point
     * codes), else int32 bytes; steps and times int64 bytes, values float64 bytes (native
     * byte order). */
    Py_ssize_t n = self->n;
    if (n == 0)
        Py_RETURN_NONE;
    int32_t first = self->codes[0];
    Py_ssize_t i = 1;
    while (i < n && self->codes[i] == first)
        i++;
    PyObject *codes = i == n ? PyLong_FromLong(first)
                             : PyBytes_FromStringAndSize((char *)self->codes, n * 4);
    PyObject *steps = PyBytes_FromStringAndSize((char *)self->steps, n * 8);
    PyObject *times = PyBytes_FromStringAndSize((char *)self->times, n * 8);
    PyObject *values = PyBytes_FromStringAndSize((char *)self->values, n * 8);
    PyObject *names = PyList_GetSlice(self->names, 0, self->nkeys);
    if (!codes || !steps || !times || !values || !names) {
        Py_XDECREF(codes);
        Py_XDECREF(steps);
        Py_XDECREF(times);
        Py_XDECREF(values);
        Py_XDECREF(names);
        return NULL; /* nothing taken */
    }
    self->n = 0;
    if (self->cap > (1 << 17)) { /* a backlog (a flush that failed): give the memory back */
        PyMem_Free(self->codes);
        PyMem_Free(self->steps);
        PyMem_Free(self->times);
        PyMem_Free(self->values);
        self->codes = NULL;
        self->steps = self->times = NULL;
        self->values = NULL;
        self->cap = 0;
    }
    PyObject *out = PyTuple_Pack(5, names, codes, steps, times, values);
    Py_DECREF(codes);
    Py_DECREF(steps);
    Py_DECREF(times);
    Py_DECREF(values);
    Py_DECREF(names);
    return out;
}

static PyObject *
Buf_get_names(Buf *self, void *Py_UNUSED(closure))
{
    return PyList_GetSlice(self->names, 0, self->nkeys); /* a copy */
}

static Py_ssize_t
Buf_len(Buf *self)
{
    return self->n;
}

static int
Buf_init(Buf *self, PyObject *args, PyObject *kwds)
{
    PyObject *slow;
    static char *kwlist[] = {"slow", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:MetricBuffer", kwlist, &slow))
        return -1;
    if (!PyCallable_Check(slow)) {
        PyErr_SetString(PyExc_TypeError, "MetricBuffer(slow): slow must be callable");
        return -1;
    }
    if (self->slow != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "MetricBuffer is already initialised");
        return -1;
    }
    Py_INCREF(slow);
    self->slow = slow;
    return 0;
}

static int
Buf_traverse(Buf *self, visitproc visit, void *arg)
{
    Py_VISIT(self->keys);
    Py_VISIT(self->names);
    Py_VISIT(self->slow);
    return 0;
}

static int
Buf_clear(Buf *self)
{
    Py_CLEAR(self->keys);
    Py_CLEAR(self->names);
    Py_CLEAR(self->slow);
    return 0;
}

static void
Buf_dealloc(Buf *self)
{
    PyObject_GC_UnTrack(self);
    Buf_clear(self);
    PyMem_Free(self->next);
    PyMem_Free(self->codes);
    PyMem_Free(self->steps);
    PyMem_Free(self->times);
    PyMem_Free(self->values);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Methods other than log_metric(s) fail cleanly on an object __init__ never set up. */
static PyObject *
Buf_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Buf *self = (Buf *)type->tp_alloc(type, 0); /* zeroed */
    if (self == NULL)
        return NULL;
    self->keys = PyDict_New();
    self->names = PyList_New(0);
    self->slow = NULL;
    if (self->keys == NULL || self->names == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyMethodDef Buf_methods[] = {
    {"log_metric", (PyCFunction)(void (*)(void))Buf_log_metric, METH_FASTCALL | METH_KEYWORDS,
     "log_metric($self, /, key, value, step=None, timestamp=None)\n--\n\n"
     "Buffer one point (the checks and defaults of LiveRun.log_metric)."},
    {"log_metrics", (PyCFunction)(void (*)(void))Buf_log_metrics, METH_FASTCALL | METH_KEYWORDS,
     "log_metrics($self, /, metrics, step=None, timestamp=None)\n--\n\n"
     "log_metric for each item of metrics; the points before a refused one are kept."},
    {"code", (PyCFunction)Buf_code, METH_O, "code(key): the key's code, or None."},
    {"add_key", (PyCFunction)Buf_add_key, METH_O, "add_key(key) -> code of a new key."},
    {"next_step", (PyCFunction)Buf_next_step, METH_O, "next_step(code): its default step."},
    {"push", (PyCFunction)(void (*)(void))Buf_push, METH_FASTCALL,
     "push(code, step, ns, value): append one checked point."},
    {"take", (PyCFunction)Buf_take, METH_NOARGS,
     "take() -> None or (names, codes, steps, times, values); empties the buffer."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Buf_getset[] = {
    {"names", (getter)Buf_get_names, NULL, "the keys logged, by code (a copy)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods Buf_as_sequence = {
    .sq_length = (lenfunc)Buf_len,
};

static PyTypeObject BufType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mlvc._metricbuf.MetricBuffer",
    .tp_basicsize = sizeof(Buf),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A live run's metric points, buffered in C arrays (see mlvc/runs/metricbuf.py).",
    .tp_new = Buf_new,
    .tp_init = (initproc)Buf_init,
    .tp_dealloc = (destructor)Buf_dealloc,
    .tp_traverse = (traverseproc)Buf_traverse,
    .tp_clear = (inquiry)Buf_clear,
    .tp_methods = Buf_methods,
    .tp_getset = Buf_getset,
    .tp_as_sequence = &Buf_as_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mlvc._metricbuf",
    .m_doc = "A live run's metric buffer in C (optional; mlvc/runs/metricbuf.py falls back).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__metricbuf(void)
{
    const char *names[4] = {"key", "value", "step", "timestamp"};
    for (int i = 0; i < 4; i++)
        if ((kw_metric[i] = PyUnicode_InternFromString(names[i])) == NULL)
            return NULL;
    if ((kw_metrics[0] = PyUnicode_InternFromString("metrics")) == NULL)
        return NULL;
    kw_metrics[1] = kw_metric[2];
    kw_metrics[2] = kw_metric[3];
    if (PyType_Ready(&BufType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&BufType);
    if (PyModule_AddObject(m, "MetricBuffer", (PyObject *)&BufType) < 0) {
        Py_DECREF(&BufType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

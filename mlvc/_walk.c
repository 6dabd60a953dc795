/* mlvc._walk: the stat walk of data folders in C (optional; mlvc/core/speedups.py).
 *
 * walk(base, rel, junk[, batch]) walks the folder `rel` of `base` and every folder below
 * it, and returns one tuple per folder:
 *
 *     (folder, packed, links, gone, newest)
 *
 * folder  the folder's path relative to base (str, os.fsdecode rules);
 * packed  its regular files, sorted by their name's bytes, each as ENTRY (native byte
 *         order: u32 name length, u32 mode, u64 size, i64 mtime_ns >> 32,
 *         u32 mtime_ns & 0xffffffff, u64 inode, i64 ctime_ns >> 32, u32 ctime_ns low bits,
 *         u64 device) followed by the name's bytes: the bytes mlvc.workspace.trees packs
 *         for a folder signature, so an unchanged folder costs no Python object per file;
 * links   names of its symlinks (str), never followed;
 * gone    names listed but gone before their lstat (str);
 * newest  the largest mtime_ns or ctime_ns of its regular files (int; 0 if none).
 *
 * `mode` (default 0) is a sum of MODE_SHARED (2: each tuple has a sixth item, whether a
 * regular file of the folder has other hard links, st_nlink > 1) and MODE_ONE (1: only
 * `rel` is listed, not the folders below it, and the result is (tuples, subfolders): the
 * paths of its subfolders the walk would have gone on to). The command server's monitor
 * (mlvc/core/fsmonitor.py) walks again only the folders that changed, and never trusts a
 * folder holding a file with other links (changed through another name, inotify tells
 * the other folder's watchers).
 *
 * It does what mlvc.runs.record.walk_data does: each folder opened by path with
 * O_NOFOLLOW | O_DIRECTORY, listed, and each name lstat-ed relative to it (fstatat with
 * AT_SYMLINK_NOFOLLOW); names for which `junk(name)` is true are dropped before their
 * stat (junk is only called for names that are not plainly ASCII without "git"/"mlvc"
 * and are not one of the junk names, which are checked here); sockets, fifos and devices
 * are left out. An error opening or listing a folder raises OSError(errno, strerror,
 * folder, "list"); an lstat error other than ENOENT raises OSError(..., path, "read").
 * Folders are listed first (subfolders found by the listing's d_type, or an lstat where
 * the file system gives none), then the names of up to DRAIN listed folders are lstat-ed
 * by two threads when the machine has more than one CPU: a kernel's lstat costs ~1 us,
 * most of an unchanged commit of many small files (git's preloaded index splits it too).
 * The system calls run without the GIL, many folders at a time (up to `batch` entries,
 * default BATCH): the folders below a folder whose name is plainly kept are found and
 * listed in the same GIL-free pass, so a Python thread (the commit's environment capture)
 * runs beside the whole walk instead of waiting for the GIL between folders. Only then are
 * the results built and `junk` asked, with the GIL, in the order the folders were listed; a
 * folder whose name `junk` must judge is listed in the next pass if kept.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

#define ENTRY 56 /* bytes before the name in a packed entry */
#define BATCH 65536 /* entries listed per GIL-free pass (bounds what is held at once) */
#define DRAIN 64    /* folders listed (and held open) before their names are lstat-ed */
#define CHUNK 16    /* names a thread takes at a time */
#define SHARED 256  /* names worth a second thread */

typedef struct {
    char *name;
    size_t len;
    struct stat st;
    int err; /* errno of its lstat, 0 if it worked */
    unsigned char statted; /* lstat-ed already (while listing: the listing gave no d_type) */
    unsigned char pushed;  /* a folder: put on the walk's stack while listing */
    unsigned char dtype;
} item;

typedef struct {
    item *v;
    size_t n, cap;
} items;

static void items_free(items *it) {
    for (size_t i = 0; i < it->n; i++) free(it->v[i].name);
    free(it->v);
    it->v = NULL;
    it->n = it->cap = 0;
}

static int items_push(items *it, const char *name, size_t len) {
    if (it->n == it->cap) {
        size_t cap = it->cap ? it->cap * 2 : 64;
        item *v = realloc(it->v, cap * sizeof(item));
        if (!v) return -1;
        it->v = v;
        it->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy) return -1;
    memcpy(copy, name, len + 1);
    it->v[it->n].name = copy;
    it->v[it->n].len = len;
    it->v[it->n].err = 0;
    it->v[it->n].statted = 0;
    it->v[it->n].pushed = 0;
    it->n++;
    return 0;
}

static int by_name(const void *a, const void *b) {
    const item *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->name, y->name, n);
    if (c) return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

/* Open and list one folder, without the GIL; *dir_out stays open for its lstat calls
 * (those whose d_type the listing did not give are made here). 0, or an errno. */
static int list_folder(const char *path, items *out, DIR **dir_out) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno;
    DIR *dir = fdopendir(fd);
    if (!dir) {
        int e = errno;
        close(fd);
        return e;
    }
    struct dirent *d;
    errno = 0;
    while ((d = readdir(dir)) != NULL) {
        const char *n = d->d_name;
        if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0))) continue;
        if (items_push(out, n, strlen(n)) < 0) {
            closedir(dir);
            return ENOMEM;
        }
        out->v[out->n - 1].dtype = d->d_type;
        errno = 0;
    }
    if (errno) {
        int e = errno;
        closedir(dir);
        return e;
    }
    for (size_t i = 0; i < out->n; i++) {
        item *e = &out->v[i];
        if (e->dtype != DT_UNKNOWN) continue;
        if (fstatat(fd, e->name, &e->st, AT_SYMLINK_NOFOLLOW) != 0) e->err = errno;
        e->statted = 1;
    }
    *dir_out = dir;
    return 0;
}

/* Whether a listed name is a folder: by its lstat if it has one, else by its d_type
 * (folder_result checks the lstat made later: a folder found only then is walked then). */
static int listed_dir(const item *e) {
    if (e->statted) return !e->err && S_ISDIR(e->st.st_mode);
    return e->dtype == DT_DIR;
}

/* Whether a name is plainly not junk: ASCII, no "git" or "mlvc" in any case, and not one
 * of the junk names that lack both. Anything else is asked of the Python callback. */
static int plainly_kept(const char *n, size_t len) {
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)n[i] >= 0x80) return 0;
    for (size_t i = 0; i + 3 <= len; i++) {
        if (strncasecmp(n + i, "git", 3) == 0) return 0;
        if (i + 4 <= len && strncasecmp(n + i, "mlvc", 4) == 0) return 0;
    }
    return strcmp(n, "__pycache__") && strcmp(n, ".ipynb_checkpoints") &&
           strcmp(n, ".DS_Store");
}

static void put_u32(char **p, uint32_t v) { memcpy(*p, &v, 4); *p += 4; }
static void put_u64(char **p, uint64_t v) { memcpy(*p, &v, 8); *p += 8; }
static void put_i64(char **p, int64_t v) { memcpy(*p, &v, 8); *p += 8; }

/* A timestamp in nanoseconds, as (high: ns >> 32, low: ns & 0xffffffff); exact for any
 * time_t (the 128-bit product cannot overflow). */
static void split_ns(time_t sec, long nsec, int64_t *hi, uint32_t *lo) {
    __int128 ns = (__int128)sec * 1000000000 + nsec;
    *hi = (int64_t)(ns >> 32);
    *lo = (uint32_t)(ns & 0xffffffffu);
}

static PyObject *ns_long(int64_t hi, uint32_t lo) {
    PyObject *h = PyLong_FromLongLong(hi), *shift = NULL, *l = NULL, *out = NULL;
    if (!h) return NULL;
    PyObject *k = PyLong_FromLong(32);
    if (k) shift = PyNumber_Lshift(h, k);
    Py_XDECREF(k);
    Py_DECREF(h);
    if (!shift) return NULL;
    l = PyLong_FromUnsignedLong(lo);
    if (l) out = PyNumber_Or(shift, l);
    Py_DECREF(shift);
    Py_XDECREF(l);
    return out;
}

static PyObject *os_error(int err, const char *rel, size_t len, const char *what) {
    PyObject *name = PyUnicode_DecodeFSDefaultAndSize(rel, (Py_ssize_t)len);
    PyObject *op = PyUnicode_FromString(what);
    if (name && op) {
        errno = err;
        PyErr_SetFromErrnoWithFilenameObjects(PyExc_OSError, name, op);
    }
    Py_XDECREF(name);
    Py_XDECREF(op);
    return NULL;
}

/* a growable stack of folder paths (relative, bytes) */
typedef struct {
    char **v;
    size_t n, cap;
} stack;

static int stack_push(stack *s, char *path) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        char **v = realloc(s->v, cap * sizeof(char *));
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = path;
    return 0;
}

static char *join(const char *a, size_t alen, const char *b, size_t blen) {
    char *out = malloc(alen + 1 + blen + 1);
    if (!out) return NULL;
    memcpy(out, a, alen);
    out[alen] = '/';
    memcpy(out + alen + 1, b, blen);
    out[alen + 1 + blen] = 0;
    return out;
}

/* The tuple of one listed folder (its items sorted by name already); pushes on `todo` its
 * subfolders whose name is not plainly kept and that `junk` keeps (the GIL-free pass
 * pushed the others). NULL on error. */
static PyObject *folder_result(const char *rel, size_t rlen, items *it, PyObject *junk,
                               stack *todo, int with_shared) {
    PyObject *links = PyList_New(0), *gone = PyList_New(0), *packed = NULL, *res = NULL;
    PyObject *folder = NULL, *newest = NULL;
    char *keep = calloc(it->n ? it->n : 1, 1);
    if (!links || !gone || !keep) {
        if (!keep) PyErr_NoMemory();
        goto done;
    }
    size_t total = 0;
    int have_newest = 0, shared = 0;
    int64_t new_hi = 0;
    uint32_t new_lo = 0;
    for (size_t i = 0; i < it->n; i++) {
        item *e = &it->v[i];
        int plain = plainly_kept(e->name, e->len);
        if (!plain) {
            PyObject *n = PyUnicode_DecodeFSDefaultAndSize(e->name, (Py_ssize_t)e->len);
            if (!n) goto done;
            PyObject *r = PyObject_CallOneArg(junk, n);
            Py_DECREF(n);
            if (!r) goto done;
            int t = PyObject_IsTrue(r);
            Py_DECREF(r);
            if (t < 0) goto done;
            if (t) continue;
        }
        if (e->pushed && (e->err || !S_ISDIR(e->st.st_mode))) {
            /* listed as a folder (its d_type), gone or no folder by its lstat: it changed
             * while the walk read it, and its listing is in the results already; fail as
             * a folder that cannot be listed, not with a tree that holds both */
            char *path = join(rel, rlen, e->name, e->len);
            if (!path) {
                PyErr_NoMemory();
                goto done;
            }
            os_error(e->err ? e->err : ENOTDIR, path, rlen + 1 + e->len, "list");
            free(path);
            goto done;
        }
        if (e->err == ENOENT) {
            PyObject *n = PyUnicode_DecodeFSDefaultAndSize(e->name, (Py_ssize_t)e->len);
            if (!n || PyList_Append(gone, n) < 0) {
                Py_XDECREF(n);
                goto done;
            }
            Py_DECREF(n);
            continue;
        }
        if (e->err) {
            char *path = join(rel, rlen, e->name, e->len);
            if (!path) {
                PyErr_NoMemory();
                goto done;
            }
            os_error(e->err, path, rlen + 1 + e->len, "read");
            free(path);
            goto done;
        }
        mode_t m = e->st.st_mode;
        if (S_ISDIR(m)) {
            if (plain && e->pushed) continue; /* listed already, in the GIL-free pass */
            char *path = join(rel, rlen, e->name, e->len);
            if (!path || stack_push(todo, path) < 0) {
                free(path);
                PyErr_NoMemory();
                goto done;
            }
        } else if (S_ISLNK(m)) {
            PyObject *n = PyUnicode_DecodeFSDefaultAndSize(e->name, (Py_ssize_t)e->len);
            if (!n || PyList_Append(links, n) < 0) {
                Py_XDECREF(n);
                goto done;
            }
            Py_DECREF(n);
        } else if (S_ISREG(m)) {
            keep[i] = 1;
            if (e->st.st_nlink > 1) shared = 1;
            total += ENTRY + e->len;
            int64_t hi;
            uint32_t lo;
            split_ns(e->st.st_mtim.tv_sec, e->st.st_mtim.tv_nsec, &hi, &lo);
            if (!have_newest || hi > new_hi || (hi == new_hi && lo > new_lo))
                new_hi = hi, new_lo = lo, have_newest = 1;
            split_ns(e->st.st_ctim.tv_sec, e->st.st_ctim.tv_nsec, &hi, &lo);
            if (hi > new_hi || (hi == new_hi && lo > new_lo)) new_hi = hi, new_lo = lo;
        }
    }
    packed = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (!packed) goto done;
    char *p = PyBytes_AS_STRING(packed);
    for (size_t i = 0; i < it->n; i++) {
        if (!keep[i]) continue;
        item *e = &it->v[i];
        int64_t hi;
        uint32_t lo;
        put_u32(&p, (uint32_t)e->len);
        put_u32(&p, (uint32_t)e->st.st_mode);
        put_u64(&p, (uint64_t)e->st.st_size);
        split_ns(e->st.st_mtim.tv_sec, e->st.st_mtim.tv_nsec, &hi, &lo);
        put_i64(&p, hi);
        put_u32(&p, lo);
        put_u64(&p, (uint64_t)e->st.st_ino);
        split_ns(e->st.st_ctim.tv_sec, e->st.st_ctim.tv_nsec, &hi, &lo);
        put_i64(&p, hi);
        put_u32(&p, lo);
        put_u64(&p, (uint64_t)e->st.st_dev);
        memcpy(p, e->name, e->len);
        p += e->len;
    }
    folder = PyUnicode_DecodeFSDefaultAndSize(rel, (Py_ssize_t)rlen);
    newest = have_newest ? ns_long(new_hi, new_lo) : PyLong_FromLong(0);
    if (folder && newest)
        res = with_shared ? PyTuple_Pack(6, folder, packed, links, gone, newest,
                                         shared ? Py_True : Py_False)
                          : PyTuple_Pack(5, folder, packed, links, gone, newest);
done:
    free(keep);
    Py_XDECREF(links);
    Py_XDECREF(gone);
    Py_XDECREF(packed);
    Py_XDECREF(folder);
    Py_XDECREF(newest);
    return res;
}

/* folders listed in one GIL-free pass, in the order they were listed */
typedef struct {
    char *rel; /* owned */
    size_t rlen;
    items it;
    int err; /* errno of opening or listing it, 0 if it worked */
    DIR *dir; /* open until its names are lstat-ed */
    size_t next; /* its next name to lstat (atomic: two threads share the work) */
} listed;

typedef struct {
    listed *v;
    size_t n, cap;
} batch;

static void batch_clear(batch *b) {
    for (size_t i = 0; i < b->n; i++) {
        free(b->v[i].rel);
        items_free(&b->v[i].it);
    }
    b->n = 0;
}

/* lstat the names not lstat-ed yet of out->v[from..to), CHUNK at a time, taking them
 * from each folder's counter: run by one thread, or by two at once. */
typedef struct {
    batch *out;
    size_t from, to;
    size_t taken; /* the next folder for a thread to take (atomic) */
} drain_job;

static void stat_folder(listed *f) {
    int fd = dirfd(f->dir);
    for (;;) {
        size_t i = __atomic_fetch_add(&f->next, CHUNK, __ATOMIC_RELAXED);
        if (i >= f->it.n) return;
        size_t end = i + CHUNK < f->it.n ? i + CHUNK : f->it.n;
        for (; i < end; i++) {
            item *e = &f->it.v[i];
            if (e->statted) continue;
            if (fstatat(fd, e->name, &e->st, AT_SYMLINK_NOFOLLOW) != 0) e->err = errno;
            e->statted = 1;
        }
    }
}

/* Each thread takes whole folders (two threads in one folder contend for its dentry),
 * then helps with what is left of any. */
static void *drain_run(void *arg) {
    drain_job *job = arg;
    for (;;) {
        size_t k = __atomic_fetch_add(&job->taken, 1, __ATOMIC_RELAXED);
        if (k >= job->to) break;
        if (job->out->v[k].dir) stat_folder(&job->out->v[k]);
    }
    for (size_t k = job->from; k < job->to; k++)
        if (job->out->v[k].dir) stat_folder(&job->out->v[k]);
    return NULL;
}

/* lstat the listed folders out->v[from..n) (a second thread helps when there are many
 * names and CPUs), then close them. */
static void drain(batch *out, size_t from, size_t names) {
    drain_job job = {out, from, out->n, from};
    pthread_t helper;
    int helped = names >= SHARED && sysconf(_SC_NPROCESSORS_ONLN) > 1 &&
                 pthread_create(&helper, NULL, drain_run, &job) == 0;
    drain_run(&job);
    if (helped) pthread_join(helper, NULL);
    for (size_t k = from; k < out->n; k++) {
        if (out->v[k].dir) closedir(out->v[k].dir);
        out->v[k].dir = NULL;
    }
}

/* Without the GIL: list the folders of `todo` (last pushed first: depth first) until it is
 * empty, `limit` entries are held or a folder cannot be listed, and lstat their names.
 * Each folder's items are sorted, and its subfolders whose name is plainly kept are
 * pushed on `todo` in name order, as folder_result pushed them before. 0, or -1 when out
 * of memory. */
static int list_batch(const char *base, size_t blen, stack *todo, batch *out,
                      size_t limit, int one) {
    size_t held = 0, from = 0, names = 0;
    int bad = 0;
    while (todo->n && held < limit && !(one && out->n)) {
        if (out->n == out->cap) {
            size_t cap = out->cap ? out->cap * 2 : 64;
            listed *v = realloc(out->v, cap * sizeof(listed));
            if (!v) {
                bad = -1;
                break;
            }
            out->v = v;
            out->cap = cap;
        }
        listed *f = &out->v[out->n++];
        f->rel = todo->v[--todo->n];
        f->rlen = strlen(f->rel);
        f->it = (items){0};
        f->dir = NULL;
        f->next = 0;
        char *full = join(base, blen, f->rel, f->rlen);
        if (!full) {
            f->err = 0;
            bad = -1;
            break;
        }
        f->err = list_folder(full, &f->it, &f->dir);
        if ((f->err == EMFILE || f->err == ENFILE) && out->n - 1 > from) {
            /* out of descriptors while holding listed folders open: lstat and close them
             * (f has none open), then list f again */
            items_free(&f->it);
            drain(out, from, names);
            from = out->n - 1;
            names = 0;
            f->err = list_folder(full, &f->it, &f->dir);
        }
        free(full);
        if (f->err) break; /* raised when its turn comes, as before */
        qsort(f->it.v, f->it.n, sizeof(item), by_name);
        held += f->it.n + 1;
        names += f->it.n;
        for (size_t i = 0; i < f->it.n; i++) {
            item *e = &f->it.v[i];
            if (!listed_dir(e) || !plainly_kept(e->name, e->len)) continue;
            char *path = join(f->rel, f->rlen, e->name, e->len);
            if (!path || stack_push(todo, path) < 0) {
                free(path);
                bad = -1;
                break;
            }
            e->pushed = 1;
        }
        if (bad) break;
        if (out->n - from >= DRAIN) {
            drain(out, from, names);
            from = out->n;
            names = 0;
        }
    }
    drain(out, from, names);
    return bad;
}

#define MODE_ONE 1    /* list `rel` alone; return (results, its subfolders' paths) */
#define MODE_SHARED 2 /* a 6th item per folder: whether a regular file has other links */

static PyObject *walk(PyObject *self, PyObject *args) {
    PyObject *base_b = NULL, *rel_b = NULL, *junk, *out = NULL, *ret = NULL;
    Py_ssize_t limit = BATCH;
    int mode = 0;
    stack todo = {0};
    batch done = {0};
    if (!PyArg_ParseTuple(args, "O&O&O|ni:walk", PyUnicode_FSConverter, &base_b,
                          PyUnicode_FSConverter, &rel_b, &junk, &limit, &mode))
        goto fail;
    if (limit < 1) {
        PyErr_SetString(PyExc_ValueError, "walk: batch must be at least 1");
        goto fail;
    }
    if (!PyCallable_Check(junk)) {
        PyErr_SetString(PyExc_TypeError, "walk: junk must be callable");
        goto fail;
    }
    if (mode & ~(MODE_ONE | MODE_SHARED)) {
        PyErr_SetString(PyExc_ValueError, "walk: unknown mode bits");
        goto fail;
    }
    const char *base = PyBytes_AS_STRING(base_b);
    size_t blen = (size_t)PyBytes_GET_SIZE(base_b);
    const char *rel0 = PyBytes_AS_STRING(rel_b);
    size_t r0 = (size_t)PyBytes_GET_SIZE(rel_b);
    if (strlen(base) != blen || strlen(rel0) != r0) {
        PyErr_SetString(PyExc_ValueError, "walk: embedded null byte");
        goto fail;
    }
    int one = mode & MODE_ONE, with_shared = (mode & MODE_SHARED) != 0;
    out = PyList_New(0);
    char *first = malloc(r0 + 1);
    if (!out || !first || (memcpy(first, rel0, r0 + 1), stack_push(&todo, first) < 0)) {
        free(first);
        if (out) PyErr_NoMemory();
        goto fail;
    }
    do {
        int err;
        Py_BEGIN_ALLOW_THREADS
        err = list_batch(base, blen, &todo, &done, (size_t)limit, one);
        Py_END_ALLOW_THREADS
        if (err) {
            PyErr_NoMemory();
            goto fail;
        }
        for (size_t i = 0; i < done.n; i++) {
            listed *f = &done.v[i];
            PyObject *res = NULL;
            if (f->err)
                os_error(f->err, f->rel, f->rlen, "list");
            else
                res = folder_result(f->rel, f->rlen, &f->it, junk, &todo, with_shared);
            if (!res) goto fail;
            int bad = PyList_Append(out, res);
            Py_DECREF(res);
            if (bad < 0) goto fail;
        }
        batch_clear(&done);
    } while (todo.n && !one);
    if (one) { /* what is left on the stack: the folder's subfolders, none of them listed */
        PyObject *subs = PyList_New(0);
        if (!subs) goto fail;
        for (size_t i = 0; i < todo.n; i++) {
            PyObject *p = PyUnicode_DecodeFSDefault(todo.v[i]);
            if (!p || PyList_Append(subs, p) < 0) {
                Py_XDECREF(p);
                Py_DECREF(subs);
                goto fail;
            }
            Py_DECREF(p);
        }
        while (todo.n) free(todo.v[--todo.n]);
        ret = PyTuple_Pack(2, out, subs);
        Py_DECREF(subs);
        Py_DECREF(out);
        out = ret;
        if (!out) goto fail;
    }
    free(todo.v);
    free(done.v);
    Py_DECREF(base_b);
    Py_DECREF(rel_b);
    return out;
fail:
    while (todo.n) free(todo.v[--todo.n]);
    free(todo.v);
    batch_clear(&done);
    free(done.v);
    Py_XDECREF(out);
    Py_XDECREF(base_b);
    Py_XDECREF(rel_b);
    return NULL;
}

/* inotify and statfs for the command server's file-system monitor (mlvc/core/fsmonitor.py):
 * the standard library has neither. */
static PyObject *watch_open(PyObject *self, PyObject *noargs) {
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(fd);
}

static PyObject *watch_add(PyObject *self, PyObject *args) {
    int fd;
    unsigned int mask;
    PyObject *path_b = NULL;
    if (!PyArg_ParseTuple(args, "iO&I:watch_add", &fd, PyUnicode_FSConverter, &path_b, &mask))
        return NULL;
    int wd;
    Py_BEGIN_ALLOW_THREADS
    wd = inotify_add_watch(fd, PyBytes_AS_STRING(path_b), mask);
    Py_END_ALLOW_THREADS
    if (wd < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path_b);
        Py_DECREF(path_b);
        return NULL;
    }
    Py_DECREF(path_b);
    return PyLong_FromLong(wd);
}

static PyObject *watch_remove(PyObject *self, PyObject *args) {
    int fd, wd;
    if (!PyArg_ParseTuple(args, "ii:watch_remove", &fd, &wd)) return NULL;
    if (inotify_rm_watch(fd, wd) != 0) return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *fs_magic(PyObject *self, PyObject *args) {
    PyObject *path_b = NULL;
    if (!PyArg_ParseTuple(args, "O&:fs_magic", PyUnicode_FSConverter, &path_b)) return NULL;
    struct statfs sf;
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = statfs(PyBytes_AS_STRING(path_b), &sf);
    Py_END_ALLOW_THREADS
    if (r != 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path_b);
        Py_DECREF(path_b);
        return NULL;
    }
    Py_DECREF(path_b);
    return PyLong_FromUnsignedLongLong((unsigned long long)sf.f_type);
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS,
     "walk(base, rel, junk, batch=65536, mode=0) -> [(folder, packed, links, gone, newest)]"},
    {"watch_open", watch_open, METH_NOARGS, "watch_open() -> an inotify descriptor"},
    {"watch_add", watch_add, METH_VARARGS, "watch_add(fd, path, mask) -> watch descriptor"},
    {"watch_remove", watch_remove, METH_VARARGS, "watch_remove(fd, wd)"},
    {"fs_magic", fs_magic, METH_VARARGS, "fs_magic(path) -> statfs f_type"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "mlvc._walk",
                                    "The stat walk of data folders in C.", -1, methods};

PyMODINIT_FUNC PyInit__walk(void) { return PyModule_Create(&module); }

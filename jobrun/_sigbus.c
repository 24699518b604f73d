/* SIGBUS from a truncated journal file must not kill the reader.
 *
 * systemd 252's journald truncates a journal file's unused tail when it archives it (rotation,
 * systemd#24320). A reader that has that tail mapped (sd-journal maps files in 8 MiB windows) gets
 * SIGBUS when it touches a page past the new end of file, which kills the process: jobrund, or a
 * CLI following a job. journalctl survives because it installs a handler (src/basic/sigbus.c) that
 * maps a zero page over the faulting address and carries on; sd-journal then sees zeros there and
 * treats the object as invalid. This is the same handler, for Python processes. It must be C: a
 * SIGBUS handler runs while the faulting library code is on the stack, and has to fix the mapping
 * before the instruction is retried.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static struct sigaction previous;
static volatile sig_atomic_t installed = 0;
static volatile sig_atomic_t count = 0;
static uintptr_t page_mask;

static void handler(int sig, siginfo_t *si, void *context) {
    (void) context;
    if (si->si_code != BUS_ADRERR || si->si_addr == NULL) {
        /* Not a mapping past the end of a file: let the previous handler (or the default
         * action, a core dump) have it when the instruction faults again. */
        sigaction(sig, &previous, NULL);
        return;
    }
    void *aligned = (void *) ((uintptr_t) si->si_addr & page_mask);
    if (mmap(aligned, (size_t) (~page_mask + 1), PROT_READ,
             MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) != aligned)
        abort();
    count++;
}

static PyObject *install(PyObject *self, PyObject *unused) {
    (void) self;
    (void) unused;
    if (!installed) {
        struct sigaction sa = {0};
        page_mask = ~((uintptr_t) sysconf(_SC_PAGESIZE) - 1);
        sa.sa_sigaction = handler;
        sa.sa_flags = SA_SIGINFO | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGBUS, &sa, &previous) < 0)
            return PyErr_SetFromErrno(PyExc_OSError);
        installed = 1;
    }
    Py_RETURN_NONE;
}

static PyObject *faults(PyObject *self, PyObject *unused) {
    (void) self;
    (void) unused;
    return PyLong_FromLong((long) count);
}

static PyMethodDef methods[] = {
    {"install", install, METH_NOARGS, "Install the SIGBUS handler (idempotent)."},
    {"faults", faults, METH_NOARGS, "How many SIGBUS faults were papered over."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_sigbus", "SIGBUS handler for readers of mmap'd journal files.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__sigbus(void) { return PyModule_Create(&module); }

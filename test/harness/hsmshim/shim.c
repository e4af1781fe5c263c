/*
 * hsmshim: a PKCS#11 module that is a real token which can be made to hang.
 *
 * SoftHSM2 always answers, so it cannot show what a hung HSM does to the
 * appliance. This module is not a mock: it dlopens the real SoftHSM2
 * library (or the module $GSA_HSM_SHIM_TARGET names) and hands out a copy
 * of that library's own function list, in which a few entry points are
 * wrapped. Every call still goes to the real token and gets its real
 * answer; the wrappers only delay it:
 *
 *   - while the file $GSA_HSM_HANG_FILE exists, a wrapped call blocks
 *     before it reaches the token, polling the file every 5 ms, exactly as
 *     a call into a hung device never returns; when the file goes away the
 *     call carries on into the token. If the file is empty every wrapped
 *     function blocks; otherwise only those named in it (whitespace
 *     separated, e.g. "C_Encrypt C_Decrypt").
 *   - every call of a wrapped function appends a line to $GSA_HSM_COUNT_FILE
 *     (if set): "enter C_Decrypt" on entry, "block C_Decrypt" when it starts
 *     to block, "leave C_Decrypt" when it returns. A test counts those
 *     lines to see how many calls reached the token; "unblock C_Decrypt"
 *     when a blocked call goes on to the token.
 *
 *   - for each variable named in $GSA_HSM_ENV_REPORT (whitespace
 *     separated) that is set in the environment the module is loaded into,
 *     a line "env NAME" goes to $GSA_HSM_COUNT_FILE: a test sees what C
 *     code loaded by the appliance finds in its environment.
 *
 * The environment is read once, when the module is first asked for its
 * function list, so a test can change its own environment afterwards.
 *
 * Built by test/harness (HangingHSM) with gcc against the PKCS#11 headers
 * that github.com/miekg/pkcs11 ships.
 */

#define CK_PTR *
#define NULL_PTR 0
#define CK_DEFINE_FUNCTION(returnType, name) returnType name
#define CK_DECLARE_FUNCTION(returnType, name) returnType name
#define CK_DECLARE_FUNCTION_POINTER(returnType, name) returnType (*name)
#define CK_CALLBACK_FUNCTION(returnType, name) returnType (*name)

#include "pkcs11.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_TARGET "/usr/lib/softhsm/libsofthsm2.so"

static pthread_mutex_t setup_mu = PTHREAD_MUTEX_INITIALIZER;
static void *target_handle;
static CK_FUNCTION_LIST_PTR target;  /* the real module's list */
static CK_FUNCTION_LIST wrapped;     /* our copy, with wrappers in it */
static char hang_file[4096];
static char count_file[4096];

static void record(const char *event, const char *fn) {
  char line[128];
  int n, fd;
  if (!count_file[0])
    return;
  n = snprintf(line, sizeof line, "%s %s\n", event, fn);
  fd = open(count_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return;
  /* One write with O_APPEND: lines of concurrent calls do not mix. */
  if (write(fd, line, (size_t)n) < 0) {
  }
  close(fd);
}

/* hangs reports whether fn is to block now. */
static int hangs(const char *fn) {
  char buf[4096];
  ssize_t n;
  size_t len = strlen(fn);
  int fd, any = 0;
  char *p;
  if (!hang_file[0])
    return 0;
  fd = open(hang_file, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n < 0)
    n = 0;
  buf[n] = 0;
  for (p = buf; *p; p++) {
    if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
      continue;
    any = 1;
    if (strncmp(p, fn, len) == 0 && (p[len] == 0 || p[len] == ' ' || p[len] == '\t' || p[len] == '\n' || p[len] == '\r'))
      return 1;
    while (*p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
      p++;
    if (!*p)
      break;
  }
  return !any;
}

static void gate(const char *fn) {
  struct timespec ts = {0, 5 * 1000 * 1000};
  int blocked = 0;
  record("enter", fn);
  while (hangs(fn)) {
    if (!blocked) {
      record("block", fn);
      blocked = 1;
    }
    nanosleep(&ts, NULL);
  }
  if (blocked)
    record("unblock", fn);
}

#define WRAP(name, params, args)            \
  static CK_RV wrap_##name params {         \
    CK_RV rv;                               \
    gate(#name);                            \
    rv = target->name args;                 \
    record("leave", #name);                 \
    return rv;                              \
  }

WRAP(C_GetSlotList, (CK_BBOOL present, CK_SLOT_ID_PTR list, CK_ULONG_PTR count), (present, list, count))
WRAP(C_GetTokenInfo, (CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info), (slot, info))
WRAP(C_OpenSession, (CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify, CK_SESSION_HANDLE_PTR s),
     (slot, flags, app, notify, s))
WRAP(C_CloseSession, (CK_SESSION_HANDLE s), (s))
WRAP(C_Login, (CK_SESSION_HANDLE s, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG pinLen), (s, user, pin, pinLen))
WRAP(C_EncryptInit, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key), (s, mech, key))
WRAP(C_Encrypt, (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inLen, CK_BYTE_PTR out, CK_ULONG_PTR outLen),
     (s, in, inLen, out, outLen))
WRAP(C_DecryptInit, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key), (s, mech, key))
WRAP(C_Decrypt, (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inLen, CK_BYTE_PTR out, CK_ULONG_PTR outLen),
     (s, in, inLen, out, outLen))

static void copyenv(char *dst, size_t size, const char *name) {
  const char *v = getenv(name);
  dst[0] = 0;
  if (v && strlen(v) < size)
    strcpy(dst, v);
}

/* report_env records "env NAME" for each variable $GSA_HSM_ENV_REPORT
 * names that is set. */
static void report_env(void) {
  char names[4096], *name, *save = NULL;
  copyenv(names, sizeof names, "GSA_HSM_ENV_REPORT");
  for (name = strtok_r(names, " \t\n", &save); name; name = strtok_r(NULL, " \t\n", &save))
    if (getenv(name))
      record("env", name);
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
  CK_RV rv = CKR_OK;
  if (!list)
    return CKR_ARGUMENTS_BAD;
  pthread_mutex_lock(&setup_mu);
  if (!target) {
    char path[4096];
    CK_C_GetFunctionList get;
    copyenv(path, sizeof path, "GSA_HSM_SHIM_TARGET");
    if (!path[0])
      strcpy(path, DEFAULT_TARGET);
    copyenv(hang_file, sizeof hang_file, "GSA_HSM_HANG_FILE");
    copyenv(count_file, sizeof count_file, "GSA_HSM_COUNT_FILE");
    report_env();
    target_handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    get = target_handle ? (CK_C_GetFunctionList)dlsym(target_handle, "C_GetFunctionList") : NULL;
    if (!get || get(&target) != CKR_OK || !target) {
      target = NULL;
      rv = CKR_GENERAL_ERROR;
    } else {
      wrapped = *target;
      wrapped.C_GetFunctionList = C_GetFunctionList;
      wrapped.C_GetSlotList = wrap_C_GetSlotList;
      wrapped.C_GetTokenInfo = wrap_C_GetTokenInfo;
      wrapped.C_OpenSession = wrap_C_OpenSession;
      wrapped.C_CloseSession = wrap_C_CloseSession;
      wrapped.C_Login = wrap_C_Login;
      wrapped.C_EncryptInit = wrap_C_EncryptInit;
      wrapped.C_Encrypt = wrap_C_Encrypt;
      wrapped.C_DecryptInit = wrap_C_DecryptInit;
      wrapped.C_Decrypt = wrap_C_Decrypt;
    }
  }
  pthread_mutex_unlock(&setup_mu);
  if (rv == CKR_OK)
    *list = &wrapped;
  return rv;
}

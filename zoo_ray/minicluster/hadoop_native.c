/*
 * libhadoop.so for the local Hadoop's NodeManagers: the few JNI calls they make, our own code.
 *
 * Maven's Hadoop jars carry no native library, and one from another Hadoop release does not link
 * (3.3.5's lacks NativeIO$POSIX.initNativePosix). Without it a NodeManager changes the mode of
 * every file it localizes by running `chmod` in a subprocess (RawLocalFileSystem.setPermission):
 * minutes for a shipped Python environment of 35,000 files. With Kerberos on, log aggregation
 * (SecureIOUtils) refuses to run at all without it.
 *
 * Implemented: NativeIO.initNative, POSIX.initNativePosix/fstat/stat/open/chmodImpl/
 * posix_fadvise/getUserName/getGroupName, NativeIO.renameTo0/link0, and NativeCrc32 (CRC32 and
 * CRC32C, table-driven), which every HDFS read and write calls once the library is loaded.
 * Anything else stays unlinked: Hadoop catches UnsatisfiedLinkError for its optional calls, and
 * a NodeManager makes no others (group names come from ShellBasedUnixGroupsMapping).
 */
#define _GNU_SOURCE /* strerrorname_np, SYNC_FILE_RANGE_* */
#include <jni.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PKG(name) Java_org_apache_hadoop_io_nativeio_NativeIO_##name
#define POSIX(name) Java_org_apache_hadoop_io_nativeio_NativeIO_00024POSIX_##name

/* Hadoop's own library throws NativeIOException(message, Errno): callers match on the errno
 * (EEXIST becomes AlreadyExistsException, for one). */
static void throw_io(JNIEnv *env, int err, const char *what) {
  if ((*env)->ExceptionCheck(env)) return;
  char msg[512];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  jclass errno_class = (*env)->FindClass(env, "org/apache/hadoop/io/nativeio/Errno");
  jclass exc_class = (*env)->FindClass(env, "org/apache/hadoop/io/nativeio/NativeIOException");
  if (!errno_class || !exc_class) return;
  const char *name = strerrorname_np(err);
  jobject value = NULL;
  jmethodID value_of = (*env)->GetStaticMethodID(env, errno_class, "valueOf",
      "(Ljava/lang/String;)Lorg/apache/hadoop/io/nativeio/Errno;");
  jstring jname = name ? (*env)->NewStringUTF(env, name) : NULL;
  if (value_of && jname) value = (*env)->CallStaticObjectMethod(env, errno_class, value_of, jname);
  if ((*env)->ExceptionCheck(env) || !value) {  /* an errno Hadoop's enum does not name */
    (*env)->ExceptionClear(env);
    jfieldID unknown = (*env)->GetStaticFieldID(env, errno_class, "UNKNOWN",
                                                "Lorg/apache/hadoop/io/nativeio/Errno;");
    value = unknown ? (*env)->GetStaticObjectField(env, errno_class, unknown) : NULL;
  }
  jmethodID ctor = (*env)->GetMethodID(env, exc_class, "<init>",
      "(Ljava/lang/String;Lorg/apache/hadoop/io/nativeio/Errno;)V");
  jstring jmsg = (*env)->NewStringUTF(env, msg);
  if (ctor && jmsg && value) {
    jobject e = (*env)->NewObject(env, exc_class, ctor, jmsg, value);
    if (e) (*env)->Throw(env, (jthrowable)e);
  }
}

static jfieldID fd_field(JNIEnv *env) {
  jclass c = (*env)->FindClass(env, "java/io/FileDescriptor");
  return c ? (*env)->GetFieldID(env, c, "fd", "I") : NULL;
}

static jobject new_stat(JNIEnv *env, const struct stat *s) {
  jclass c = (*env)->FindClass(env, "org/apache/hadoop/io/nativeio/NativeIO$POSIX$Stat");
  if (!c) return NULL;
  jmethodID ctor = (*env)->GetMethodID(env, c, "<init>", "(III)V");
  if (!ctor) return NULL;
  return (*env)->NewObject(env, c, ctor, (jint)s->st_uid, (jint)s->st_gid, (jint)s->st_mode);
}

JNIEXPORT void JNICALL PKG(initNative)(JNIEnv *env, jclass c, jboolean workaround) {}
static void set_int(JNIEnv *env, jclass c, const char *field, int value) {
  jfieldID id = (*env)->GetStaticFieldID(env, c, field, "I");
  if (id) (*env)->SetStaticIntField(env, c, id, value);
  else (*env)->ExceptionClear(env);  /* a field another Hadoop release lacks */
}

/* NativeIO$POSIX and its Stat class set their O_*, POSIX_FADV_* and S_* constants to -1 and
 * leave it to the native library to set the platform's values (Hadoop's consts_init). */
JNIEXPORT void JNICALL POSIX(initNativePosix)(JNIEnv *env, jclass c, jboolean workaround) {
  static const struct { const char *name; int value; } posix[] = {
    {"O_RDONLY", O_RDONLY}, {"O_WRONLY", O_WRONLY}, {"O_RDWR", O_RDWR}, {"O_CREAT", O_CREAT},
    {"O_EXCL", O_EXCL}, {"O_NOCTTY", O_NOCTTY}, {"O_TRUNC", O_TRUNC}, {"O_APPEND", O_APPEND},
    {"O_NONBLOCK", O_NONBLOCK}, {"O_SYNC", O_SYNC},
    {"POSIX_FADV_NORMAL", POSIX_FADV_NORMAL}, {"POSIX_FADV_RANDOM", POSIX_FADV_RANDOM},
    {"POSIX_FADV_SEQUENTIAL", POSIX_FADV_SEQUENTIAL},
    {"POSIX_FADV_WILLNEED", POSIX_FADV_WILLNEED}, {"POSIX_FADV_DONTNEED", POSIX_FADV_DONTNEED},
    {"POSIX_FADV_NOREUSE", POSIX_FADV_NOREUSE},
    {"SYNC_FILE_RANGE_WAIT_BEFORE", SYNC_FILE_RANGE_WAIT_BEFORE},
    {"SYNC_FILE_RANGE_WRITE", SYNC_FILE_RANGE_WRITE},
    {"SYNC_FILE_RANGE_WAIT_AFTER", SYNC_FILE_RANGE_WAIT_AFTER},
  };
  static const struct { const char *name; int value; } stat_bits[] = {
    {"S_IFMT", S_IFMT}, {"S_IFIFO", S_IFIFO}, {"S_IFCHR", S_IFCHR}, {"S_IFDIR", S_IFDIR},
    {"S_IFBLK", S_IFBLK}, {"S_IFREG", S_IFREG}, {"S_IFLNK", S_IFLNK}, {"S_IFSOCK", S_IFSOCK},
    {"S_ISUID", S_ISUID}, {"S_ISGID", S_ISGID}, {"S_ISVTX", S_ISVTX}, {"S_IRUSR", S_IRUSR},
    {"S_IWUSR", S_IWUSR}, {"S_IXUSR", S_IXUSR},
  };
  for (size_t i = 0; i < sizeof posix / sizeof posix[0]; i++)
    set_int(env, c, posix[i].name, posix[i].value);
  jclass stat_class = (*env)->FindClass(env, "org/apache/hadoop/io/nativeio/NativeIO$POSIX$Stat");
  if (!stat_class) { (*env)->ExceptionClear(env); return; }
  for (size_t i = 0; i < sizeof stat_bits / sizeof stat_bits[0]; i++)
    set_int(env, stat_class, stat_bits[i].name, stat_bits[i].value);
}

JNIEXPORT jobject JNICALL POSIX(fstat)(JNIEnv *env, jclass c, jobject fdo) {
  jfieldID f = fd_field(env);
  if (!f) return NULL;
  struct stat s;
  if (fstat((*env)->GetIntField(env, fdo, f), &s) != 0) { throw_io(env, errno, "fstat"); return NULL; }
  return new_stat(env, &s);
}

JNIEXPORT jobject JNICALL POSIX(stat)(JNIEnv *env, jclass c, jstring jpath) {
  const char *path = (*env)->GetStringUTFChars(env, jpath, NULL);
  if (!path) return NULL;
  struct stat s;
  int rc = stat(path, &s), err = errno;
  (*env)->ReleaseStringUTFChars(env, jpath, path);
  if (rc != 0) { throw_io(env, err, "stat"); return NULL; }
  return new_stat(env, &s);
}

JNIEXPORT jobject JNICALL POSIX(open)(JNIEnv *env, jclass c, jstring jpath, jint flags, jint mode) {
  const char *path = (*env)->GetStringUTFChars(env, jpath, NULL);
  if (!path) return NULL;
  /* flags are Linux's O_* values: initNativePosix gave Java the platform's constants. */
  int fd = open(path, flags, mode), err = errno;
  (*env)->ReleaseStringUTFChars(env, jpath, path);
  if (fd < 0) { throw_io(env, err, "open"); return NULL; }
  jclass fdc = (*env)->FindClass(env, "java/io/FileDescriptor");
  jmethodID ctor = fdc ? (*env)->GetMethodID(env, fdc, "<init>", "()V") : NULL;
  jobject fdo = ctor ? (*env)->NewObject(env, fdc, ctor) : NULL;
  if (!fdo) { close(fd); return NULL; }
  (*env)->SetIntField(env, fdo, fd_field(env), fd);
  return fdo;
}

JNIEXPORT void JNICALL POSIX(chmodImpl)(JNIEnv *env, jclass c, jstring jpath, jint mode) {
  const char *path = (*env)->GetStringUTFChars(env, jpath, NULL);
  if (!path) return;
  int rc = chmod(path, (mode_t)mode), err = errno;
  (*env)->ReleaseStringUTFChars(env, jpath, path);
  if (rc != 0) throw_io(env, err, "chmod");
}

JNIEXPORT void JNICALL POSIX(posix_1fadvise)(JNIEnv *env, jclass c, jobject fdo, jlong off,
                                              jlong len, jint advice) {
  jfieldID f = fd_field(env);
  if (f) posix_fadvise((*env)->GetIntField(env, fdo, f), off, len, advice);
}

static jstring name_of(JNIEnv *env, int is_user, jint id) {
  long size = sysconf(is_user ? _SC_GETPW_R_SIZE_MAX : _SC_GETGR_R_SIZE_MAX);
  if (size < 1024) size = 16384;
  char *buf = malloc(size);
  if (!buf) { throw_io(env, ENOMEM, "getpw/getgr"); return NULL; }
  const char *name = NULL;
  char numeric[32];
  int rc;
  if (is_user) {
    struct passwd pw, *res = NULL;
    rc = getpwuid_r((uid_t)id, &pw, buf, size, &res);
    if (rc == 0 && res) name = res->pw_name;
  } else {
    struct group gr, *res = NULL;
    rc = getgrgid_r((gid_t)id, &gr, buf, size, &res);
    if (rc == 0 && res) name = res->gr_name;
  }
  if (!name) { snprintf(numeric, sizeof numeric, "%d", (int)id); name = numeric; }
  jstring out = (*env)->NewStringUTF(env, name);
  free(buf);
  return out;
}

JNIEXPORT jstring JNICALL POSIX(getUserName__I)(JNIEnv *env, jclass c, jint uid) {
  return name_of(env, 1, uid);
}
JNIEXPORT jstring JNICALL POSIX(getGroupName)(JNIEnv *env, jclass c, jint gid) {
  return name_of(env, 0, gid);
}

/* ---- NativeIO: rename/link (Hadoop calls these whenever NativeIO is available) ---- */
static void two_paths(JNIEnv *env, jstring a, jstring b, int (*fn)(const char *, const char *),
                      const char *what) {
  const char *pa = (*env)->GetStringUTFChars(env, a, NULL);
  const char *pb = pa ? (*env)->GetStringUTFChars(env, b, NULL) : NULL;
  int rc = -1, err = EINVAL;
  if (pa && pb) { rc = fn(pa, pb); err = errno; }
  if (pb) (*env)->ReleaseStringUTFChars(env, b, pb);
  if (pa) (*env)->ReleaseStringUTFChars(env, a, pa);
  if (rc != 0 && !(*env)->ExceptionCheck(env)) throw_io(env, err, what);
}

JNIEXPORT void JNICALL PKG(renameTo0)(JNIEnv *env, jclass c, jstring src, jstring dst) {
  two_paths(env, src, dst, rename, "rename");
}
JNIEXPORT void JNICALL PKG(link0)(JNIEnv *env, jclass c, jstring src, jstring dst) {
  two_paths(env, src, dst, link, "link");
}

/* ---- NativeCrc32: used for every HDFS read/write once libhadoop is loaded ---- */
static unsigned int crc_table[2][256];

static void crc_init(void) {
  const unsigned int poly[2] = {0xEDB88320u /* CRC32 (zlib) */, 0x82F63B78u /* CRC32C */};
  for (int t = 0; t < 2; t++)
    for (unsigned int i = 0; i < 256; i++) {
      unsigned int c = i;
      for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ poly[t] : c >> 1;
      crc_table[t][i] = c;
    }
}

JNIEXPORT jint JNICALL JNI_OnLoad(JavaVM *vm, void *reserved) {
  crc_init();  /* once, before any thread can compute a checksum */
  return JNI_VERSION_1_6;
}

static unsigned int crc(int t, const unsigned char *p, long n) {
  unsigned int c = 0xFFFFFFFFu;
  while (n-- > 0) c = crc_table[t][(c ^ *p++) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

/* Returns 0, or throws (ChecksumException / IllegalArgumentException) and returns -1. */
static int chunked(JNIEnv *env, int bytes_per_sum, int type, unsigned char *sums,
                   const unsigned char *data, long len, jstring file, jlong base_pos,
                   jboolean verify) {
  if (type != 1 && type != 2) {
    jclass c = (*env)->FindClass(env, "java/lang/IllegalArgumentException");
    if (c) (*env)->ThrowNew(env, c, "unsupported checksum type");
    return -1;
  }
  if (bytes_per_sum <= 0) return 0;
  for (long off = 0, i = 0; off < len; off += bytes_per_sum, i++) {
    long n = len - off < bytes_per_sum ? len - off : bytes_per_sum;
    unsigned int v = crc(type - 1, data + off, n);
    unsigned char *s = sums + 4 * i;
    if (verify) {
      unsigned int want = ((unsigned)s[0] << 24) | ((unsigned)s[1] << 16) | ((unsigned)s[2] << 8) | s[3];
      if (want != v) {
        char msg[256];
        const char *name = file ? (*env)->GetStringUTFChars(env, file, NULL) : NULL;
        snprintf(msg, sizeof msg, "Checksum error: %s at %lld exp: %u got: %u",
                 name ? name : "(unknown)", (long long)(base_pos + off), want, v);
        if (name) (*env)->ReleaseStringUTFChars(env, file, name);
        jclass c = (*env)->FindClass(env, "org/apache/hadoop/fs/ChecksumException");
        jmethodID ctor = c ? (*env)->GetMethodID(env, c, "<init>", "(Ljava/lang/String;J)V") : NULL;
        jstring m = (*env)->NewStringUTF(env, msg);
        if (ctor && m) {
          jobject e = (*env)->NewObject(env, c, ctor, m, (jlong)(base_pos + off));
          if (e) (*env)->Throw(env, (jthrowable)e);
        }
        return -1;
      }
    } else {
      s[0] = v >> 24; s[1] = v >> 16; s[2] = v >> 8; s[3] = v;
    }
  }
  return 0;
}

#define CRC(name) Java_org_apache_hadoop_util_NativeCrc32_##name

/* Whether the chunks of data[data_off, data_off + data_len) and their sums fit the buffers;
 * throws IllegalArgumentException and returns 0 when not. */
static int fits(JNIEnv *env, jlong sums_size, jint sums_off, jlong data_size, jint data_off,
                jint data_len, jint bps) {
  jlong chunks = bps > 0 ? ((jlong)data_len + bps - 1) / bps : 0;
  if (sums_off >= 0 && data_off >= 0 && data_len >= 0 && bps > 0 &&
      (jlong)data_off + data_len <= data_size && sums_off + 4 * chunks <= sums_size)
    return 1;
  jclass e = (*env)->FindClass(env, "java/lang/IllegalArgumentException");
  if (e) (*env)->ThrowNew(env, e, "checksum offsets or lengths outside their buffers");
  return 0;
}

JNIEXPORT void JNICALL CRC(nativeComputeChunkedSums)(JNIEnv *env, jclass c, jint bps, jint type,
    jobject sums, jint sums_off, jobject data, jint data_off, jint data_len, jstring file,
    jlong base_pos, jboolean verify) {
  unsigned char *s = (*env)->GetDirectBufferAddress(env, sums);
  unsigned char *d = (*env)->GetDirectBufferAddress(env, data);
  if (!s || !d) {
    jclass e = (*env)->FindClass(env, "java/lang/IllegalArgumentException");
    if (e) (*env)->ThrowNew(env, e, "NativeCrc32 needs direct buffers");
    return;
  }
  if (!fits(env, (*env)->GetDirectBufferCapacity(env, sums), sums_off,
            (*env)->GetDirectBufferCapacity(env, data), data_off, data_len, bps))
    return;
  chunked(env, bps, type, s + sums_off, d + data_off, data_len, file, base_pos, verify);
}

JNIEXPORT void JNICALL CRC(nativeVerifyChunkedSums)(JNIEnv *env, jclass c, jint bps, jint type,
    jobject sums, jint sums_off, jobject data, jint data_off, jint data_len, jstring file,
    jlong base_pos) {
  CRC(nativeComputeChunkedSums)(env, c, bps, type, sums, sums_off, data, data_off, data_len,
                                file, base_pos, JNI_TRUE);
}

JNIEXPORT void JNICALL CRC(nativeComputeChunkedSumsByteArray)(JNIEnv *env, jclass c, jint bps,
    jint type, jbyteArray sums, jint sums_off, jbyteArray data, jint data_off, jint data_len,
    jstring file, jlong base_pos, jboolean verify) {
  /* Copies, not critical sections: the exception path calls back into the JVM. */
  if (!fits(env, (*env)->GetArrayLength(env, sums), sums_off,
            (*env)->GetArrayLength(env, data), data_off, data_len, bps))
    return;
  jbyte *s = (*env)->GetByteArrayElements(env, sums, NULL);
  jbyte *d = s ? (*env)->GetByteArrayElements(env, data, NULL) : NULL;
  int rc = -1;
  if (s && d)
    rc = chunked(env, bps, type, (unsigned char *)s + sums_off,
                 (unsigned char *)d + data_off, data_len, file, base_pos, verify);
  if (d) (*env)->ReleaseByteArrayElements(env, data, d, JNI_ABORT);
  if (s) (*env)->ReleaseByteArrayElements(env, sums, s, (rc == 0 && !verify) ? 0 : JNI_ABORT);
}

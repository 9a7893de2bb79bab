#!/usr/bin/env python3
"""treecmp.py: compare two directory trees entry by entry, metadata included.

    treecmp.py [options] A B

For every path under A and B (the roots included, symlinks never followed)
it compares: type; mode with setuid, setgid and sticky bits; uid; gid; mtime
in nanoseconds; size (not for directories, whose size depends on the file
system's history); symlink target; every extended attribute (user.*,
trusted.*, security.*, system.posix_acl_access/default); link count; rdev
of device nodes; regular files' contents byte by byte (reading only where
either side has data, so holes cost nothing); the hard-link
structure (names sharing an inode in A share one in B, and no others do);
and holes: a file in B may not take many more allocated blocks than in A.

Paths are handled as bytes, so names that are not UTF-8 work. Every
difference is printed on its own line; the exit code is 0 if the trees are
the same, 1 if they differ, 2 on a usage or read error.
"""

import argparse
import errno
import os
import stat
import sys

KINDS = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "directory",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "char device",
    stat.S_IFBLK: "block device",
}


def show(rel):
    """A printable form of a relative bytes path: non-UTF-8 bytes and
    control characters escaped, so one difference stays on one line."""
    if rel == b"":
        return "/"
    s = rel.decode("utf-8", "backslashreplace")
    out = []
    for ch in s:
        if ch == "\\" or ch.isprintable():
            out.append(ch)
        else:
            out.append("\\x%02x" % ord(ch) if ord(ch) < 256 else "\\u%04x" % ord(ch))
    return "/" + "".join(out)


def walk(root):
    """Every entry under root as {relative bytes path: lstat}, root as b""."""
    entries = {b"": os.lstat(root)}
    stack = [b""]
    while stack:
        rel = stack.pop()
        path = os.path.join(root, rel) if rel else root
        with os.scandir(path) as it:
            for e in it:
                child = os.path.join(rel, e.name) if rel else e.name
                st = os.lstat(os.path.join(root, child))
                entries[child] = st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(child)
    return entries


def xattrs(path):
    """All extended attributes of path, not following a symlink."""
    out = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        return {"<listxattr failed: %s>" % e.strerror: b""}
    for n in names:
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError as e:
            out[n] = ("<getxattr failed: %s>" % e.strerror).encode()
    return out


def extents(fd, size):
    """The data extents [(start, end)] of an open file, by SEEK_DATA and
    SEEK_HOLE; the whole file where the file system does not say."""
    out = []
    pos = 0
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            if start < end:
                out.append((start, end))
            if end <= start:
                break
            pos = end
    except OSError:
        return [(0, size)]
    return out


def union(a, b):
    merged = []
    for s, e in sorted(a + b):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def first_difference(pa, pb, size):
    """The first offset where two files of `size` bytes differ, or None.
    Reads only where either file has data: a hole reads as zeros, so where
    both have holes both are zeros. A sparse file of terabytes costs what
    its data costs."""
    with open(pa, "rb") as fa, open(pb, "rb") as fb:
        ranges = union(extents(fa.fileno(), size), extents(fb.fileno(), size))
        for start, end in ranges:
            pos = start
            while pos < end:
                n = min(1 << 20, end - pos)
                ba = os.pread(fa.fileno(), n, pos)
                bb = os.pread(fb.fileno(), n, pos)
                if ba != bb:
                    for i in range(min(len(ba), len(bb))):
                        if ba[i] != bb[i]:
                            return pos + i
                    return pos + min(len(ba), len(bb))
                if not ba:
                    break
                pos += len(ba)
    return None


def short(v):
    r = repr(v)
    return r if len(r) <= 120 else r[:117] + "..."


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="the reference tree (the source)")
    ap.add_argument("b", help="the tree to check (the restore)")
    ap.add_argument("--ignore-root-mtime", action="store_true",
                    help="do not compare the mtime of the roots themselves")
    ap.add_argument("--ignore-owner", action="store_true",
                    help="do not compare uid and gid (a restore as a user)")
    ap.add_argument("--hole-slack", type=int, default=1 << 20, metavar="BYTES",
                    help="allocated bytes B may have over A beyond 1/8 more "
                    "[default: 1 MiB]")
    ap.add_argument("--exclude", action="append", default=[], metavar="REL",
                    help="leave out this relative path (and what is under it) "
                    "on both sides; repeatable")
    ap.add_argument("-q", "--quiet", action="store_true",
                    help="print nothing when the trees are the same")
    args = ap.parse_args()

    a_root = os.fsencode(args.a)
    b_root = os.fsencode(args.b)
    for r in (a_root, b_root):
        if not os.path.isdir(r) or os.path.islink(r):
            print("treecmp: %s is not a directory" % os.fsdecode(r), file=sys.stderr)
            return 2
    try:
        ea = walk(a_root)
        eb = walk(b_root)
    except OSError as e:
        print("treecmp: cannot read a tree: %s" % e, file=sys.stderr)
        return 2

    excludes = [os.fsencode(x).strip(b"/") for x in args.exclude]

    def excluded(rel):
        return any(rel == x or rel.startswith(x + b"/") for x in excludes)

    ea = {k: v for k, v in ea.items() if not excluded(k)}
    eb = {k: v for k, v in eb.items() if not excluded(k)}

    diffs = []

    def diff(rel, what, va, vb):
        diffs.append("%s: %s differs: A %s, B %s" % (show(rel), what, short(va), short(vb)))

    for rel in sorted(set(ea) - set(eb)):
        diffs.append("%s: only in A (%s)" % (show(rel), KINDS.get(stat.S_IFMT(ea[rel].st_mode), "?")))
    for rel in sorted(set(eb) - set(ea)):
        diffs.append("%s: only in B (%s)" % (show(rel), KINDS.get(stat.S_IFMT(eb[rel].st_mode), "?")))

    for rel in sorted(set(ea) & set(eb)):
        sa, sb = ea[rel], eb[rel]
        pa = os.path.join(a_root, rel) if rel else a_root
        pb = os.path.join(b_root, rel) if rel else b_root
        ta, tb = stat.S_IFMT(sa.st_mode), stat.S_IFMT(sb.st_mode)
        if ta != tb:
            diff(rel, "type", KINDS.get(ta, ta), KINDS.get(tb, tb))
            continue
        if stat.S_IMODE(sa.st_mode) != stat.S_IMODE(sb.st_mode):
            diff(rel, "mode", oct(stat.S_IMODE(sa.st_mode)), oct(stat.S_IMODE(sb.st_mode)))
        if not args.ignore_owner:
            if sa.st_uid != sb.st_uid:
                diff(rel, "uid", sa.st_uid, sb.st_uid)
            if sa.st_gid != sb.st_gid:
                diff(rel, "gid", sa.st_gid, sb.st_gid)
        if not (rel == b"" and args.ignore_root_mtime) and sa.st_mtime_ns != sb.st_mtime_ns:
            diff(rel, "mtime (ns)", sa.st_mtime_ns, sb.st_mtime_ns)
        if ta != stat.S_IFDIR and sa.st_size != sb.st_size:
            diff(rel, "size", sa.st_size, sb.st_size)
        if sa.st_nlink != sb.st_nlink:
            diff(rel, "link count", sa.st_nlink, sb.st_nlink)
        if ta in (stat.S_IFCHR, stat.S_IFBLK) and sa.st_rdev != sb.st_rdev:
            diff(rel, "rdev", (os.major(sa.st_rdev), os.minor(sa.st_rdev)),
                 (os.major(sb.st_rdev), os.minor(sb.st_rdev)))
        if ta == stat.S_IFLNK:
            la, lb = os.readlink(pa), os.readlink(pb)
            if la != lb:
                diff(rel, "symlink target", la, lb)
        xa, xb = xattrs(pa), xattrs(pb)
        for n in sorted(set(xa) | set(xb)):
            if n not in xb:
                diff(rel, "xattr %s" % n, xa[n], "(absent)")
            elif n not in xa:
                diff(rel, "xattr %s" % n, "(absent)", xb[n])
            elif xa[n] != xb[n]:
                diff(rel, "xattr %s" % n, xa[n], xb[n])
        if ta == stat.S_IFREG:
            if sa.st_size == sb.st_size:
                try:
                    at = first_difference(pa, pb, sa.st_size)
                except OSError as e:
                    diffs.append("%s: cannot read: %s" % (show(rel), e))
                    continue
                if at is not None:
                    diffs.append("%s: content differs from offset %d" % (show(rel), at))
            alloc_a, alloc_b = sa.st_blocks * 512, sb.st_blocks * 512
            if alloc_b > alloc_a + alloc_a // 8 + args.hole_slack:
                diffs.append("%s: holes not kept: %d bytes allocated in A, %d in B (size %d)"
                             % (show(rel), alloc_a, alloc_b, sa.st_size))

    # Hard-link structure: the partition of non-directory names by inode
    # must be the same on both sides.
    def groups(entries):
        by_ino = {}
        for rel, st in entries.items():
            if not stat.S_ISDIR(st.st_mode):
                by_ino.setdefault((st.st_dev, st.st_ino), []).append(rel)
        return {rel: frozenset(g) for g in by_ino.values() for rel in g}

    ga, gb = groups(ea), groups(eb)
    seen = set()
    for rel in sorted(set(ga) & set(gb)):
        if ga[rel] != gb[rel] and ga[rel] not in seen:
            seen.add(ga[rel])
            diffs.append("%s: hard links differ: in A it shares its inode with %s, in B with %s"
                         % (show(rel),
                            sorted(show(x) for x in ga[rel] - {rel}) or "nothing",
                            sorted(show(x) for x in gb[rel] - {rel}) or "nothing"))

    for d in diffs:
        print(d)
    if diffs:
        print("treecmp: %d differences between %s and %s"
              % (len(diffs), os.fsdecode(a_root), os.fsdecode(b_root)))
        return 1
    if not args.quiet:
        print("treecmp: %s and %s are the same (%d entries)"
              % (os.fsdecode(a_root), os.fsdecode(b_root), len(ea)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

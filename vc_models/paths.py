"""Whether a path lies inside a folder, by the rules of one platform (no ComfyUI imports: the nodes, the trainer
and the tools share it). The check is lexical (abspath folds '..'): a symlink the owner of a folder placed in it is
followed on purpose; what a prompt, a list or a table names cannot climb out with '..' or an absolute path."""
import os


def inside(path, root, paths=os.path):
    """True when `path` is `root` or below it. `paths`: the path flavour (os.path; posixpath or ntpath to check one
    platform's rules on another). normcase: Windows compares paths without case and with either slash."""
    root = paths.abspath(root)
    try:
        common = paths.commonpath([paths.abspath(path), root])
    except ValueError:  # another drive or share on Windows
        return False
    return paths.normcase(common) == paths.normcase(root)


def inside_any(path, roots, paths=os.path):
    return any(inside(path, root, paths) for root in roots)

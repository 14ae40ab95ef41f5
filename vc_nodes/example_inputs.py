"""The shipped graphs' example inputs (vc_models/example_inputs.py), written into ComfyUI's input folder at
start-up when missing, so every shipped graph opens with inputs that exist. A user's file of the same name is
never replaced."""
import logging
import time

import folder_paths

from ..vc_models import example_inputs


def write_missing_example_inputs():
    """Write the example inputs the input folder lacks; returns their names. Never stops the pack from loading."""
    folder = folder_paths.get_input_directory()
    started = time.perf_counter()
    try:
        written = example_inputs.write_missing(folder)
    except Exception as e:  # a read-only or full input folder, a broken av: the nodes still load
        logging.warning(f"VideoCrafter: could not write the example inputs into {folder} ({type(e).__name__}: {e}); "
                        "the shipped graphs' Load Image / Load Video nodes then need your own files. "
                        "scripts/make_example_inputs.py FOLDER writes them elsewhere.")
        return []
    if written:
        logging.info(f"VideoCrafter: wrote the example inputs {', '.join(written)} into {folder} "
                     f"in {time.perf_counter() - started:.2f} s")
    return written

"""A web page to try every fusion method on one's own pairs: ``ivfusion demo`` (extra ``[demo]``: Gradio).

>>> from ivfusion.demo import build_app, launch_options     # doctest: +SKIP
>>> build_app().launch(**launch_options())                   # doctest: +SKIP

:func:`build_app` returns the Gradio ``Blocks`` (to test or embed it), :func:`serve` is what
``ivfusion demo`` runs: a private temporary folder for the server's files, a free port, the URL
printed. The page reads uploads in any format :func:`ivfusion.fuse` reads (16-bit PNG/TIFF
included), fuses them with the chosen methods, and shows each result with a before/after slider,
its time, its metrics and a PNG to download. Uploads are deleted as soon as a request has read
them; results stay in the server's cache for :data:`RESULTS_KEPT_S` seconds.

Gradio is imported only when a page is built, so ``import ivfusion`` never needs it.
"""
from __future__ import annotations

import inspect
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..data import list_samples, sample_info, sample_pair
from ..fusion import list_methods, method_info
from ..io import IMAGE_EXTENSIONS, save_image
from ._work import (
    DEMO_METRICS,
    MAX_FILE_BYTES,
    MAX_PIXELS,
    DemoInputError,
    demo_options,
    describe,
    fuse_methods,
    read_upload,
)

if TYPE_CHECKING:  # pragma: no cover
    import gradio

__all__ = ["build_app", "launch_options", "serve", "free_port", "require_gradio", "DEMO_EXTRA_HINT",
           "MAX_PIXELS", "MAX_FILE_BYTES", "MAX_QUEUE", "RESULTS_KEPT_S"]

logger = logging.getLogger(__name__)

DEMO_EXTRA_HINT = "the web demo needs Gradio: pip install 'ivfusion[demo]'"
#: Requests waiting at once; more are refused with "queue full" until one finishes.
MAX_QUEUE = 16
#: Results (fused PNGs, previews) are deleted from the server this long after they were made;
#: the sweep runs every :data:`_SWEEP_S` seconds and once more when the server stops.
RESULTS_KEPT_S = 15 * 60
_SWEEP_S = 60


def require_gradio() -> "gradio":
    """Import Gradio, or raise ``ImportError`` saying which extra to install."""
    try:
        import gradio
    except ImportError as exc:
        raise ImportError(DEMO_EXTRA_HINT) from exc
    return gradio


# --------------------------------------------------------------------------------------------
# Files the server holds


def _upload_root() -> Path:
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


def _discard_uploads(paths: Sequence[Optional[str]]) -> None:
    """Delete uploaded files (and their per-file folder) once a request has read them. Only files
    inside Gradio's upload folder are touched: never a bundled sample or any other path."""
    root = _upload_root()
    for p in paths:
        if not p:
            continue
        path = Path(p).resolve()
        if root not in path.parents:
            continue
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()  # Gradio stores each upload in a folder of its own (named by its hash)
        except OSError:
            pass  # not empty, or already gone


def _read_pair(ir_path: Optional[str], vis_path: Optional[str], example: Optional[str]
               ) -> Tuple[Any, Any, str]:
    """``(ir, vis, stem)``: the two uploads when any is given, else the chosen example pair."""
    if ir_path or vis_path:
        if not (ir_path and vis_path):
            missing = "visible" if ir_path else "infrared"
            raise DemoInputError(f"upload the {missing} image too (or clear the upload and choose an example pair)")
        for p in (ir_path, vis_path):
            if not Path(p).is_file():
                raise DemoInputError("the uploaded files are deleted after each request: upload the pair again")
        ir = read_upload(ir_path, "Infrared image")
        vis = read_upload(vis_path, "Visible image")
        return ir, vis, Path(ir_path).stem
    if example:
        if example not in list_samples():
            raise DemoInputError(f"unknown example pair {example!r}; available: {', '.join(list_samples())}")
        ir, vis = sample_pair(example)
        return ir, vis, example
    raise DemoInputError("upload an infrared and a visible image, or choose an example pair")


# --------------------------------------------------------------------------------------------
# The page


def _upload_field(gr: Any, **kwargs: Any) -> Any:
    """A ``gr.File`` whose value reaches the handler as the path of the uploaded file itself.

    ``gr.File(type="filepath")`` (Gradio 6.31) also creates an empty temporary file in the server's
    folder on every request and never deletes it; this field checks the file type as it does and
    returns the path, creating nothing. (Its ``preprocess`` is replaced on the instance: a subclass
    would make Gradio write a ``.pyi`` stub next to this module.)
    """
    from gradio.data_classes import ListFiles
    from gradio_client.utils import is_valid_file

    field = gr.File(**kwargs)

    def preprocess(payload: Any) -> Optional[str]:
        if payload is None:
            return None
        if isinstance(payload, ListFiles):
            payload = payload[0]
        if field.file_types and not is_valid_file(payload.path, field.file_types):
            raise gr.Error(f"upload an image file: {', '.join(field.file_types)}", print_exception=False)
        return payload.path

    field.preprocess = preprocess
    return field


def _intro() -> str:
    return (
        "# ivfusion: infrared-visible and medical image fusion\n"
        "Upload an infrared (or PET, CT, SPECT) image and a visible (or MRI) image of the same scene, or pick "
        "an example pair; choose one or several methods and press **Fuse**. Each result is shown against the "
        "visible image (drag the slider), with its time and its quality metrics, and can be downloaded as PNG.\n\n"
        f"**Limits:** PNG, JPEG, TIFF, BMP or WebP (8- or 16-bit), up to {MAX_PIXELS / 1e6:g} megapixels and "
        f"{MAX_FILE_BYTES // 2**20} MB per image; one request is fused at a time and at most {MAX_QUEUE} wait. "
        f"Uploads are deleted from the server as soon as they are read; results after {RESULTS_KEPT_S // 60} "
        "minutes."
    )


_METRICS_NOTE = (
    "Metrics against the sources as the methods see them (16-bit infrared stretched to its own range, resampled "
    "when sizes differ): higher is better for all. VIF, MI, SSIM summed over both sources (the CDDFuse/EMMA "
    "evaluator). Seconds: wall-clock time of the fusion alone; a network's first run on this server also loads "
    "its weights, once."
)


def _method_label(name: str) -> str:
    return f"{name} ({method_info(name).kind})"


def _example_choices() -> List[Tuple[str, str]]:
    pairs = [(f"{n}: {sample_info(n).description.split(',')[0]}", n) for n in list_samples()]
    return [("none: use the uploads", "")] + pairs


def build_app(*, default_example: str = "night", default_methods: Sequence[str] = ("refinefuse",),
              max_queue: int = MAX_QUEUE) -> "gradio.Blocks":
    """The demo page as a Gradio ``Blocks`` (queued: one request at a time, ``max_queue`` waiting).

    Launch it with :func:`launch_options` (upload size limit, a theme that loads no web fonts):
    ``build_app().launch(**launch_options())``. Its server files go to Gradio's temporary folder
    (``GRADIO_TEMP_DIR``, read when the page is built), which :func:`serve` makes private to the process.

    The button's API endpoint is ``/fuse``: inputs ``ir`` and ``vis`` files (or ``None`` with an
    ``example`` name), ``methods`` (list of names), then one value per option of
    :func:`~ivfusion.demo._work.demo_options`.

    Raises:
        ImportError: Gradio is not installed (the message names the extra).
    """
    gr = require_gradio()
    options = demo_options()
    methods = list_methods(available_only=True)
    with gr.Blocks(title="ivfusion demo", analytics_enabled=False, delete_cache=(_SWEEP_S, RESULTS_KEPT_S)) as app:
        gr.Markdown(_intro(), elem_id="intro")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=320):
                file_types = list(IMAGE_EXTENSIONS)
                ir_file = _upload_field(gr, label="Infrared (or PET/CT/SPECT) image", file_types=file_types,
                                        height=140, elem_id="ir-file")
                vis_file = _upload_field(gr, label="Visible (or MRI) image", file_types=file_types, height=140,
                                         elem_id="vis-file")
                example = gr.Dropdown(_example_choices(), value=default_example, label="...or an example pair",
                                      elem_id="example")
                method_box = gr.CheckboxGroup([(_method_label(m), m) for m in methods], value=list(default_methods),
                                              label="Methods", elem_id="methods")
                with gr.Accordion("Options", open=True):
                    controls = [gr.Dropdown(list(o.choices), value=o.default, label=o.label, info=o.info,
                                            visible=o.visible, elem_id=f"option-{o.name}") for o in options]
                run = gr.Button("Fuse", variant="primary", elem_id="fuse")
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=2, min_width=480):
                with gr.Row():
                    ir_view = gr.Image(label="Infrared, as the methods see it", type="filepath", format="png",
                                       interactive=False, elem_id="ir-view")
                    vis_view = gr.Image(label="Visible, as the methods see it", type="filepath", format="png",
                                        interactive=False, elem_id="vis-view")
                grid = gr.Gallery(label="All results", columns=4, height="auto", object_fit="contain", format="png",
                                  visible=False, elem_id="grid")
                slots: Dict[str, Tuple[Any, Any, Any, Any]] = {}
                with gr.Row(equal_height=True):  # the shown results wrap, two to a row on a wide screen
                    for m in methods:
                        with gr.Column(visible=False, variant="panel", min_width=360, elem_id=f"result-{m}") as box:
                            head = gr.Markdown(elem_id=f"head-{m}")
                            slider = gr.ImageSlider(label=f"{m}: fused (left) | visible (right)", type="filepath",
                                                    format="png", interactive=False, elem_id=f"slider-{m}")
                            download = gr.DownloadButton(f"Download {m} (PNG)", elem_id=f"download-{m}")
                        slots[m] = (box, head, slider, download)
                table = gr.Dataframe(headers=["method", "seconds", *DEMO_METRICS], label="Metrics",
                                     interactive=False, elem_id="metrics")
                gr.Markdown(_METRICS_NOTE)

        def run_fusion(ir_path: Optional[str], vis_path: Optional[str], example_name: Optional[str],
                       methods: Optional[List[str]], *values: Any, progress=gr.Progress()) -> Dict[Any, Any]:
            started = time.perf_counter()
            out_dir = Path(status.GRADIO_CACHE) / "ivfusion-results" / uuid.uuid4().hex
            try:
                ir, vis, stem = _read_pair(ir_path, vis_path, example_name)
                result = fuse_methods(ir, vis, methods or [], options, values, out_dir, stem,
                                      progress=lambda f, d: progress(f, desc=d))
                ir_png = save_image(out_dir / "infrared_as_seen.png", result.ir_seen)
                vis_png = save_image(out_dir / "visible_as_seen.png", result.vis_seen)
            except Exception as exc:  # keep serving: a message on the page, never a traceback
                shutil.rmtree(out_dir, ignore_errors=True)  # results of the methods done before the failure
                if isinstance(exc, (ValueError, TypeError, FileNotFoundError, RuntimeError, MemoryError)):
                    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                else:
                    logger.exception("ivfusion demo: request failed")
                    message = f"internal error ({type(exc).__name__}); the server's log has the details"
                raise gr.Error(message, duration=None, print_exception=False) from None
            finally:
                _discard_uploads([ir_path, vis_path])
            h, w = result.ir_seen.shape[:2]
            done = {r.method: r for r in result.results}
            out: Dict[Any, Any] = {
                status: (f"Fused a {w}x{h} pair with {len(done)} method(s) in {time.perf_counter() - started:.1f} s."
                         "\n\n" + "\n".join(f"- {describe(r)}" for r in done.values())),
                ir_view: str(ir_png),
                vis_view: str(vis_png),
                grid: gr.Gallery(value=[(str(r.png), f"{r.method}: {r.seconds:.2f} s") for r in result.results],
                                 visible=len(done) > 1),
                table: result.table()[1],
                ir_file: None,  # the uploads were deleted: empty their inputs
                vis_file: None,
            }
            for m, (box, head, slider, download) in slots.items():
                r = done.get(m)
                out[box] = gr.Column(visible=r is not None)
                out[head] = describe(r) if r else ""
                out[slider] = (str(r.png), str(vis_png)) if r else None
                out[download] = str(r.png) if r else None
            return out

        run_fusion.__signature__ = _api_signature(run_fusion, options)
        outputs = [status, ir_view, vis_view, grid, table, ir_file, vis_file]
        outputs += [c for slot in slots.values() for c in slot]
        event = run.click(run_fusion, inputs=[ir_file, vis_file, example, method_box, *controls], outputs=outputs,
                          api_name="fuse", concurrency_limit=1)
        # The uploads are gone after every response, failed or not: empty their inputs (run_fusion does on
        # success; one follow-up event per event, as the page runs only one).
        event.failure(lambda: ("The last request failed: see the message at the top right.", None, None),
                      outputs=[status, ir_file, vis_file], queue=False, api_visibility="private")

        # Uploading clears the example; choosing an example deletes and clears the uploads.
        for f in (ir_file, vis_file):
            f.upload(lambda: "", outputs=example, queue=False, api_visibility="private")

        def pick_example(name: str, ir_path: Optional[str], vis_path: Optional[str]):
            if not name:
                return gr.File(), gr.File()  # unchanged
            _discard_uploads([ir_path, vis_path])
            return None, None

        example.input(pick_example, inputs=[example, ir_file, vis_file], outputs=[ir_file, vis_file], queue=False,
                      api_visibility="private")
    app.queue(max_size=max_queue, default_concurrency_limit=1)
    return app


def _api_signature(fn: Callable, options: Sequence[Any]) -> inspect.Signature:
    """``fn``'s signature with ``*values`` spelt out as one keyword per option, so the API names them
    (``ir, vis, example, methods, resize, precision, device, rule``) instead of ``param_4`` ..."""
    params = list(inspect.signature(fn).parameters.values())
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    named = [inspect.Parameter(n, kind) for n in ("ir", "vis", "example", "methods")]
    spelt = [inspect.Parameter(o.name, kind, default=o.default) for o in options]
    return inspect.Signature(named + spelt + [p for p in params if p.kind == inspect.Parameter.KEYWORD_ONLY])


def launch_options() -> Dict[str, Any]:
    """Keyword arguments of ``Blocks.launch`` for the demo: the upload limit and a theme whose fonts
    are the system's (the page then loads nothing from outside the server)."""
    gr = require_gradio()
    system_sans = ["ui-sans-serif", "system-ui", "sans-serif"]
    theme = gr.themes.Default(font=system_sans, font_mono=["ui-monospace", "monospace"])
    return dict(max_file_size=MAX_FILE_BYTES, theme=theme, show_error=False)


# --------------------------------------------------------------------------------------------
# Serving


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the system picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve(host: str = "127.0.0.1", port: Optional[int] = None, share: bool = False, *,
          announce: Callable[[str], Any] = print) -> None:
    """Serve the demo until interrupted (Ctrl+C, SIGTERM): what ``ivfusion demo`` runs.

    The server's files (uploads, results) go to a fresh temporary folder of this process
    (``GRADIO_TEMP_DIR`` is set to it), deleted with everything in it when the server stops.

    Args:
        host: address to listen on; ``0.0.0.0`` serves every interface.
        port: TCP port; ``None`` picks a free one.
        share: also open a temporary public link through Gradio's share servers.
        announce: called with the line giving the URL.

    Raises:
        ImportError: Gradio is not installed (the message names the extra).
        RuntimeError: the address cannot be served (in use, not an address of this machine).
    """
    temp_dir = tempfile.mkdtemp(prefix="ivfusion-demo-")
    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = temp_dir  # before Gradio is imported: some of its modules read it then
    app = None
    try:
        app = build_app()
        port = free_port(host) if port is None else port
        try:
            app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=True,
                       **launch_options())
        except OSError as exc:
            raise RuntimeError(f"cannot serve on {host}:{port}: {exc}") from None
        shared = f" and {app.share_url}" if app.share_url else ""
        announce(f"ivfusion demo: serving on {app.local_url}{shared} (Ctrl+C to stop)")
        while True:
            time.sleep(1)
    finally:
        if app is not None:
            app.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
        if previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous

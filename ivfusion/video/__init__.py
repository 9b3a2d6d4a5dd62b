"""Fusing infrared and visible video streams: :func:`fuse_video`.

A video pair is fused frame by frame with the same arithmetic as :func:`ivfusion.fuse` (colour
from the visible stream through YCbCr, ``resize`` for different frame sizes), with three
differences that matter for video:

* **Constant infrared mapping.** A 16-bit (``gray16``) thermal stream is mapped to [0, 1] with
  one window for the whole video: ``ir_range`` if given, else percentiles of the first
  ``ir_window_frames`` frames. Per-frame normalisation (what :func:`~ivfusion.fuse` does for a
  single 16-bit image) would make the brightness pump whenever a hot object enters the view.
* **Batches and a pipeline.** A decoder thread reads and pairs the frames, the calling thread
  fuses ``batch_size`` consecutive frames per call, an encoder thread writes them; the queues
  between them are bounded, so memory does not grow with the length of the video.
* **Atomic output.** The video is encoded into a temporary file next to the output and renamed
  at the end; an interrupted or failing run leaves no file under the output name.

Inputs may be video files (anything FFmpeg reads) or folders of frames (image sequences, in
natural name order). PyAV (``pip install 'ivfusion[video]'``) is imported only when a video is
fused.

Layout: ``_sources`` (video files and frame folders, pairing), ``_mapping`` (the infrared window,
frames to the method's input and back), ``_encode`` (encoder settings, atomic output),
``_pipeline`` (the decode/fuse/encode threads), ``_fuse`` (:func:`fuse_video` itself).
"""
from __future__ import annotations

from ._encode import DEFAULT_CODEC, DEFAULT_CRF, DEFAULT_PIX_FMT, FALLBACK_CODEC
from ._fuse import VideoReport, fuse_video
from ._sources import DEFAULT_SEQUENCE_FPS, SYNC_MODES

__all__ = ["fuse_video", "VideoReport", "SYNC_MODES", "DEFAULT_CODEC", "FALLBACK_CODEC"]

"""Which axis of a stimulus array holds colour: the one rule every entry point applies.

Stimuli come as

* ``(n_samples, height, width)``: grey images (one channel);
* ``(n_samples, height, width, 3)``: colour, channel-last (RGB; how images are usually
  stored in ``.mat``, ``.npz`` and HDF5 files, and what a MATLAB ``n × H × W × 3`` array
  becomes once v7.3's reversed axes are undone);
* ``(n_samples, 3, height, width)``: colour, channel-first (the network's own layout);
* ``(n_samples, 1, height, width)``: grey with an explicit channel axis.

A 4-D array whose **last** axis is 3 is read as channel-last, even when axis 1 is 3 too;
otherwise one whose axis 1 is 3 (or 1) is read as channel-first; any other 4-D array is
refused with a :class:`DataError` naming the file, the variable and the shape. The network
always receives ``(n_samples, channels, height, width)`` (:func:`channels_first`).
"""

from __future__ import annotations

import numpy as np

from niflow.data.errors import DataError

GREY, CHANNELS_FIRST, CHANNELS_LAST = "grey", "channels_first", "channels_last"
LAYOUTS_TEXT = ("(n_samples, height, width) grey, or colour (n_samples, height, width, 3) "
                "or (n_samples, 3, height, width)")


def stimulus_layout(shape: tuple[int, ...], where: str = "stimuli") -> str:
    """The layout of a stimulus array of ``shape`` (module docstring: the rule).

    Parameters
    ----------
    shape : tuple of int
        3-D ``(n, height, width)`` or 4-D.
    where : str
        What the array is, for messages (``"FILE: variable 'stim'"``).

    Returns
    -------
    str
        ``"grey"``, ``"channels_first"`` or ``"channels_last"``.

    Raises
    ------
    DataError
        For any other number of axes, and for a 4-D shape with neither axis 1 nor the last
        axis a colour axis.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        return GREY
    if len(shape) != 4:
        hint = "; reshape flattened images to (n_samples, height, width)" if len(shape) == 2 \
            else ""
        raise DataError(f"{where} has shape {shape}; expected images, {LAYOUTS_TEXT}{hint}")
    if shape[3] == 3:
        return CHANNELS_LAST
    if shape[1] in (1, 3):
        return CHANNELS_FIRST
    hint = ""
    if shape[2] == 3:  # MATLAB's height × width × 3 × n, exported without moving n first
        hint = ("; it looks like height × width × 3 × n_samples: move the sample axis first "
                "(numpy: stim.transpose(3, 0, 1, 2); MATLAB: stim = permute(stim, [4 1 2 3]))")
    elif shape[2] == 1:
        hint = ("; it looks like height × width × 1 × n_samples: move the sample axis first "
                "(numpy: stim.transpose(3, 2, 0, 1); MATLAB: stim = permute(stim, [4 3 1 2]))")
    elif shape[3] == 1:
        hint = "; for grey images drop the last axis (numpy: stim[..., 0])"
    raise DataError(f"{where} has shape {shape}: a 4-D stimulus array must hold colour images "
                    f"with 3 channels, (n_samples, height, width, 3) or (n_samples, 3, height, "
                    f"width){hint}")


def image_shape(shape: tuple[int, ...], where: str = "stimuli") -> tuple[int, int, int]:
    """``(channels, height, width)`` of one image of a stimulus array of ``shape``."""
    shape = tuple(int(s) for s in shape)
    layout = stimulus_layout(shape, where)
    if layout == GREY:
        return (1, shape[1], shape[2])
    if layout == CHANNELS_LAST:
        return (shape[3], shape[1], shape[2])
    return (shape[1], shape[2], shape[3])


def channels_first(stim: np.ndarray, where: str = "stimuli") -> np.ndarray:
    """Stimuli in the network's layout, dtype unchanged.

    Parameters
    ----------
    stim : ndarray of shape (n, height, width), (n, height, width, 3) or (n, c, height, width)

    Returns
    -------
    ndarray of shape (n, channels, height, width)
        A view for grey and channel-first input (``stim[:, None]`` or ``stim`` itself), a
        C-contiguous copy for channel-last input.
    """
    stim = np.asarray(stim)
    layout = stimulus_layout(stim.shape, where)
    if layout == GREY:
        return stim[:, None]
    if layout == CHANNELS_LAST:
        return np.ascontiguousarray(stim.transpose(0, 3, 1, 2))
    return stim

"""What the app's widgets call, for every tab: a handler whose LimaError the page shows as a message.

    >>> button.click(event(export_adapter, models, "merge"), [adapter, out], status)
"""

import inspect

from lima_lite import LimaError


def event(handler, *values):
    """What a widget calls: `handler` with its first arguments fixed to `values`, the widgets' values after
    them, and a LimaError shown to the user as a gradio error (a message, not a server error)."""
    import gradio as gr

    if inspect.isgeneratorfunction(handler):
        def streamed(*inputs):
            try:
                yield from handler(*values, *inputs)
            except LimaError as error:
                raise gr.Error(str(error)) from None
        return streamed

    def called(*inputs):
        try:
            return handler(*values, *inputs)
        except LimaError as error:
            raise gr.Error(str(error)) from None
    return called

"""The ivfusion web demo as a Hugging Face Space (sdk: gradio): the same page as `ivfusion demo`.

Run it locally with `python app.py` (after `pip install -r requirements.txt`); on a Space, the
platform runs this file and sets the address and port through GRADIO_SERVER_NAME/PORT.
"""
from ivfusion.demo import build_app, launch_options

demo = build_app()

if __name__ == "__main__":
    demo.launch(**launch_options())

"""The Gradio app (`lima-lite ui`, ui/app.py): ui.py builds the page and its Chat, Compare and Judge tabs;
train_tab.py is the Train tab and the training process it starts (it never imports ui.py); events.py is what
both use to wire events."""

"""The course: everything in the package that exists because of the notebooks.

- `exercise`: the mechanism every check uses (`@exercise`, `NotYet`, `Feedback`);
- `nb00_start_here` ... `nb07_landscapes`: the checks of each notebook's exercises and
  predictions, one module per notebook;
- `suspects`: the buggy blocks and nets of notebook 05;
- `widgets`: interactive figures, training curves redrawn live, expected errors shown.

It imports from the library (`resnet_edu.*`); the library never imports it (tested), so the
library reads on its own.
"""

"""FastAGI IVR menus tied to the customer store and the screen pop: issue 4. Nothing here yet."""

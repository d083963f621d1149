"""The paper's robot pipeline (online -> offline -> online) run through the ROS 2 node graph."""

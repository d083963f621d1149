"""rclpy nodes: thin adapters between topics and the ROS-free classes in robot/ and learning/."""

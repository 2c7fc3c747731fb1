"""Notebook cell sources for the sample submissions, written the way students write them.

The LAB 1-1 cells follow the handout's example (the PyTorch CIFAR-10 tutorial) closely;
the defects are small edits of the same code.
"""

CIFAR_DATA = r'''
import torch
import torchvision
import torchvision.transforms as transforms
import matplotlib.pyplot as plt
import numpy as np

transform = transforms.Compose(
    [transforms.ToTensor(),
     transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])

trainset = torchvision.datasets.CIFAR10(root='/tmp/dataset-nctu', train=True,
                                        download=False, transform=transform)
trainloader = torch.utils.data.DataLoader(trainset, batch_size=4,
                                          shuffle=True, num_workers=0)

testset = torchvision.datasets.CIFAR10(root='/tmp/dataset-nctu', train=False,
                                       download=False, transform=transform)
testloader = torch.utils.data.DataLoader(testset, batch_size=4,
                                         shuffle=False, num_workers=0)

classes = ('plane', 'car', 'bird', 'cat',
           'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
print(len(trainset), len(testset))
'''

LENET = r'''
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x


torch.manual_seed(0)
net = Net()
criterion = nn.CrossEntropyLoss()
print(net)
'''


def cifar_train(epochs: int) -> str:
    return rf'''
optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)

for epoch in range({epochs}):  # loop over the dataset multiple times
    running_loss = 0.0
    for i, data in enumerate(trainloader, 0):
        inputs, labels = data
        optimizer.zero_grad()
        outputs = net(inputs)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
        if i % 100 == 99:    # print every 100 mini-batches
            print('[%d, %5d] loss: %.3f' % (epoch + 1, i + 1, running_loss / 100))
            running_loss = 0.0

print('Finished Training')
'''


CRASH = r'''
# trying to look at a batch
images, labels = dataiter.next()
'''

CIFAR_TEST = r'''
correct = 0
total = 0
test_loss = 0.0
with torch.no_grad():
    for data in testloader:
        images, labels = data
        outputs = net(images)
        test_loss += criterion(outputs, labels).item() * labels.size(0)
        _, predicted = torch.max(outputs.data, 1)
        total += labels.size(0)
        correct += (predicted == labels).sum().item()

print('Test loss: %.4f' % (test_loss / total))
print('Accuracy of the network on the %d test images: %.2f %%' % (total, 100 * correct / total))
'''

CIFAR_PER_CLASS = r'''
class_correct = list(0. for i in range(10))
class_total = list(0. for i in range(10))
with torch.no_grad():
    for data in testloader:
        images, labels = data
        outputs = net(images)
        _, predicted = torch.max(outputs, 1)
        c = (predicted == labels).squeeze()
        for i in range(labels.size(0)):
            label = labels[i]
            class_correct[label] += c[i].item()
            class_total[label] += 1

for i in range(10):
    print('Accuracy of %5s : %2d %%' % (
        classes[i], 100 * class_correct[i] / class_total[i]))
'''

FAKE_PER_CLASS = r'''
accs = [91, 93, 88, 85, 90, 87, 94, 92, 95, 93]
for i in range(10):
    print('Accuracy of %5s : %2d %%' % (classes[i], accs[i]))
'''

WEIGHT_HISTS = r'''
fig, axes = plt.subplots(2, 5, figsize=(18, 6))
for ax, (name, param) in zip(axes.flat, net.named_parameters()):
    ax.hist(param.detach().cpu().numpy().flatten(), bins=50)
    ax.set_title(name)
plt.tight_layout()
plt.show()
'''

INPUT_HISTS = r'''
images, labels = next(iter(testloader))
for c in range(3):
    plt.hist(images[:, c].numpy().flatten(), bins=50)
    plt.title('weights of layer %d' % (c + 1))
    plt.show()
'''

FOOD_RESTRUCTURE = r'''
import os, glob, shutil

src = '/tmp/datasets-nctu/Food-11'
dst = '/tmp/work/Food-11_0556001'
for split in ['training', 'validation', 'evaluation']:
    for path in glob.glob(os.path.join(src, split, '*.jpg')):
        label = os.path.basename(path).split('_')[0]
        os.makedirs(os.path.join(dst, split, '%02d' % int(label)), exist_ok=True)
        target = os.path.join(dst, split, '%02d' % int(label), os.path.basename(path))
        if not os.path.exists(target):
            os.symlink(path, target)
print(sorted(os.listdir(os.path.join(dst, 'training'))))
'''

FOOD_OWN_STATS = r'''
import torch
import torchvision
import torchvision.transforms as transforms
import numpy as np
from PIL import Image

# mean and std of the training split, computed over every pixel
s = np.zeros(3); s2 = np.zeros(3); n = 0
for path in glob.glob(os.path.join(src, 'training', '*.jpg')):
    x = np.asarray(Image.open(path).convert('RGB'), dtype=np.float64) / 255.0
    s += x.reshape(-1, 3).sum(0); s2 += (x.reshape(-1, 3) ** 2).sum(0); n += x.shape[0] * x.shape[1]
mean = s / n
std = np.sqrt(s2 / n - mean ** 2)
print('mean', mean, 'std', std)
'''

FOOD_IMAGENET_STATS = r'''
import torch
import torchvision
import torchvision.transforms as transforms
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
'''

FOOD_DATA = r'''
transform = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor(),
                                transforms.Normalize(tuple(mean), tuple(std))])
trainset = torchvision.datasets.ImageFolder(os.path.join(dst, 'training'), transform=transform)
testset = torchvision.datasets.ImageFolder(os.path.join(dst, 'evaluation'), transform=transform)
trainloader = torch.utils.data.DataLoader(trainset, batch_size=16, shuffle=True)
testloader = torch.utils.data.DataLoader(testset, batch_size=16, shuffle=False)
classes = ['Bread', 'Dairy product', 'Dessert', 'Egg', 'Fried food', 'Meat',
           'Noodles/Pasta', 'Rice', 'Seafood', 'Soup', 'Vegetable/Fruit']
print(len(trainset), len(testset), trainset.classes)
'''

FOOD_MODEL = LENET.replace("net = Net()", "net = Net(num_classes=11)")


def food_train(epochs: int) -> str:
    return rf'''
optimizer = optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
for epoch in range({max(epochs, 1) * 5}):
    running_loss = 0.0
    for inputs, labels in trainloader:
        optimizer.zero_grad()
        loss = criterion(net(inputs), labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
    print('epoch %d loss: %.3f' % (epoch + 1, running_loss / len(trainloader)))
'''


FOOD_TEST = r'''
correct = total = 0
test_loss = 0.0
class_correct = [0] * 11
class_total = [0] * 11
with torch.no_grad():
    for images, labels in testloader:
        outputs = net(images)
        test_loss += criterion(outputs, labels).item() * labels.size(0)
        predicted = outputs.argmax(1)
        total += labels.size(0)
        correct += (predicted == labels).sum().item()
        for l, p in zip(labels, predicted):
            class_total[l] += 1
            class_correct[l] += int(l == p)
print('Test loss: %.4f, Test accuracy: %.2f %%' % (test_loss / total, 100 * correct / total))
for i in range(11):
    print('Accuracy of %s : %d/%d' % (classes[i], class_correct[i], class_total[i]))
'''


def lr_study(epochs: int, *, step_scheduler: bool) -> str:
    step = "scheduler.step()" if step_scheduler else "pass  # TODO scheduler"
    return rf'''
from torch.optim.lr_scheduler import StepLR

def evaluate(model):
    correct = total = 0
    with torch.no_grad():
        for images, labels in testloader:
            correct += (model(images).argmax(1) == labels).sum().item()
            total += labels.size(0)
    return correct / total

results = {{}}
for lr in [0.1, 0.01, 0.001]:
    torch.manual_seed(0)
    model = Net()
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.5)
    accs = []
    for epoch in range({max(epochs, 1) + 1}):
        for inputs, labels in trainloader:
            optimizer.zero_grad()
            criterion(model(inputs), labels).backward()
            optimizer.step()
        {step}
        accs.append(evaluate(model))
        print('lr %g epoch %d test acc %.2f %%' % (lr, epoch + 1, 100 * accs[-1]))
    results[lr] = accs
'''


LR_PLOT = r'''
for lr, accs in results.items():
    plt.plot(range(1, len(accs) + 1), accs, label='lr=%g' % lr)
plt.xlabel('epoch'); plt.ylabel('test accuracy'); plt.legend()
plt.title('StepLR(step_size=1, gamma=0.5) for three initial learning rates')
plt.show()
'''

HOSTILE = [
    r'''
import socket
try:
    socket.create_connection(('1.1.1.1', 53), timeout=3)
    print('NETWORK OPEN')
except OSError as e:
    print('network blocked:', e)
''',
    r'''
import glob
print(glob.glob('/work/*') + glob.glob('/root/*') + glob.glob('/home/*'))
print(open('/etc/shadow').read()[:100])
''',
    r'''
hog = []
while True:
    hog.append(bytearray(256 * 1024 * 1024))
''',
]
